"""pass@k with the unbiased estimator of Chen et al. (2021), and confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), computed as a stable product; 1 when fewer than k samples fail."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0):
    """Mean over problems with a percentile-bootstrap confidence interval (resampling problems)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(arr.mean()), (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def pass_at_k_scores(counts: Sequence[tuple[int, int]], ks: Sequence[int]) -> dict[str, dict]:
    """{"pass@k": {"value", "ci95", "n", "k", "problems"}} for each k <= the smallest n."""
    out = {}
    for k in ks:
        if any(k > n for n, _ in counts):
            continue
        per_problem = [pass_at_k(n, c, k) for n, c in counts]
        value, ci = mean_ci(per_problem)
        out[f"pass@{k}"] = {
            "value": value,
            "ci95": ci,
            "k": k,
            "n": min(n for n, _ in counts),
            "problems": len(counts),
        }
    return out


# Two-sided 97.5% quantiles of Student's t for 1..10 degrees of freedom (then the normal's 1.96
# is within 8%); a few seeds are the usual case for repeated ICL draws.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def over_seeds(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and a t-based 95% interval of a score repeated over seeds."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if arr.size < 2:
        return {"value": mean, "sd": 0.0, "ci95": (mean, mean), "per_seed": arr.tolist()}
    sd = float(arr.std(ddof=1))
    t = _T975[arr.size - 2] if arr.size - 1 <= len(_T975) else 1.96
    half = t * sd / np.sqrt(arr.size)
    return {"value": mean, "sd": sd, "ci95": (float(mean - half), float(mean + half)), "per_seed": arr.tolist()}
