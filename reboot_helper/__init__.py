"""`pitstop-reboot`: the small program inside the per-node reboot Job. Standard library only;
it imports nothing of the brain."""
