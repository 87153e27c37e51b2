"""Rebooting a node and seeing it back: the per-node reboot Job, its dry run before admission,
and the health gate's checks before the uncordon."""
