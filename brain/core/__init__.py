"""The brain's pure core: what a window says, when it is open, who may go next, each node's next
step, what the lock holds and what the status shows. No kopf, no kubernetes client, no I/O:
everything here is decided from values and tested in seconds."""
