"""Pieces shared by the brain and the detector (the node contract). Imports nothing heavy."""
