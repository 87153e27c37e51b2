"""Draining a node: cordon, kubectl-drain semantics through the Eviction API, PodDisruptionBudget
health, and the watches that tell when to try again."""
