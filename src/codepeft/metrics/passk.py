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
    """{"pass@k": {"value", "ci95", "n", "k", "problems"}} for each k <= the smallest n. The
    interval is Wilson's for one sample a problem (a proportion: 0 of 164 is [0, 0.023], not
    [0, 0]), else a bootstrap over problems within [0, 1]."""
    from codepeft.stats import bootstrap_ci, wilson

    out = {}
    for k in ks:
        if any(k > n for n, _ in counts):
            continue
        per_problem = [pass_at_k(n, c, k) for n, c in counts]
        value = float(np.mean(per_problem)) if per_problem else float("nan")
        if all(n == 1 for n, _ in counts):
            ci = wilson(sum(c for _, c in counts), len(counts))
        else:
            ci = bootstrap_ci(per_problem, bounds=(0.0, 1.0))
        out[f"pass@{k}"] = {
            "value": value,
            "ci95": ci,
            "k": k,
            "n": min(n for n, _ in counts),
            "problems": len(counts),
        }
    return out


def over_seeds(values: Sequence[float], bounds: tuple[float, float] = (-np.inf, np.inf)) -> dict:
    """Mean, sample standard deviation and a t-based 95% interval of a score repeated over seeds,
    clipped to the metric's range `bounds`."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if arr.size < 2:
        return {"value": mean, "sd": 0.0, "ci95": (mean, mean), "per_seed": arr.tolist()}
    sd = float(arr.std(ddof=1))
    from scipy.stats import t as student_t

    t = float(student_t.ppf(0.975, arr.size - 1))
    half = t * sd / np.sqrt(arr.size)
    low, high = max(float(mean - half), bounds[0]), min(float(mean + half), bounds[1])
    return {"value": mean, "sd": sd, "ci95": (low, high), "per_seed": arr.tolist(), "seeds": int(arr.size)}
