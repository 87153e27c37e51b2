"""What the brain asks and tells outside itself: blockers (Prometheus, pods, annotations),
preDrain/postReboot hooks, notifications through apprise, Prometheus metrics."""
