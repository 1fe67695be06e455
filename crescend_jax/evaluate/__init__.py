"""Evaluation on held-out compositions: pairwise accuracy, ranking metrics, noise ceiling, report."""
