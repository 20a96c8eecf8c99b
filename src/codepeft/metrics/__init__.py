"""Metrics: pass@k (unbiased estimator) and confidence intervals."""

from codepeft.metrics.passk import mean_ci, over_seeds, pass_at_k, pass_at_k_scores

__all__ = ["mean_ci", "over_seeds", "pass_at_k", "pass_at_k_scores"]
