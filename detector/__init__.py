"""The Pitstop detector: an unprivileged per-node reporter of "this node needs a reboot".

It watches one sentinel file and mirrors its presence onto its own Node as the label and
annotations named in `pitstop.contract`. It imports only the standard library at run time (no
kopf, no kubernetes client, no pydantic after start-up) so that it stays small on every node.
"""
