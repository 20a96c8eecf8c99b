"""Statistics for comparing methods on the same problems, and intervals that respect a metric.

Everything here is a thin, tested layer over scipy and statsmodels (the tests compare each
function with the library call or a textbook case); the only formula written out is McNemar's
sample size (Connor 1987), which neither library has.

Conventions: `a` and `b` are per-problem scores of two methods on the same problems, in the same
order; a difference is `a - b`; p-values are two-sided.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Comparison:
    """One paired test of method a against method b on the same problems."""

    test: str  # "mcnemar-exact" | "permutation" | "randomization" | "bootstrap"
    problems: int
    difference: float  # the metric of a minus that of b
    ci_low: float  # 95% paired-bootstrap interval of the difference
    ci_high: float
    pvalue: float
    a_only: int | None = None  # McNemar's discordant pairs: solved by a only, by b only
    b_only: int | None = None


# -- intervals ----------------------------------------------------------------------------------
def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values (and so its intervals) live in."""
    name = metric.split("/")[-1]
    if name in ("bleu", "chrf", "chrf++"):
        return (0.0, 100.0)
    if name in ("loss", "perplexity"):
        return (0.0, math.inf)
    if name.startswith("robust_drop@"):
        return (-math.inf, 1.0)  # relative: a perturbation can help more than nominal
    return (0.0, 1.0)  # pass@k, em@k, rates, CodeBLEU, accuracy, F1


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion (statsmodels); (0, 1) bounds hold by construction
    and 0 of n gives a non-degenerate upper bound."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(successes, n, alpha=1 - level, method="wilson")
    p = successes / n  # rounding can put a bound a hair past the estimate (1.7e-18 for 0 of 149)
    return float(min(max(low, 0.0), p)), float(max(min(high, 1.0), p))


def bootstrap_ci(
    values: Sequence[float],
    bounds: tuple[float, float] = (-math.inf, math.inf),
    statistic: Callable[[np.ndarray], float] | None = None,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval over problems (BCa, scipy; percentile where BCa is undefined), clipped
    to the metric's range `bounds`. `statistic` maps the resampled values to the metric (the
    mean by default); all-equal values give the degenerate interval of that value."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)  # rows: problems (a row may be a vector of statistics)
    stat = statistic or (lambda x: float(np.mean(x)))
    if len(data) == 0:
        return (math.nan, math.nan)
    if np.all(data == data[0]):
        v = stat(data)
        return (v, v)
    rng = np.random.default_rng(seed)
    if statistic is None and data.ndim == 1:
        sample, fn, vectorized = data, lambda x, axis=-1: np.mean(x, axis=axis), True
    else:  # resample problem indices: the statistic sees whole rows
        sample, fn, vectorized = np.arange(len(data)), lambda i: stat(data[np.asarray(i, dtype=int)]), False
    for method in ("BCa", "percentile"):
        res = bootstrap(
            (sample,), fn, vectorized=vectorized, confidence_level=level, n_resamples=resamples, method=method,
            rng=rng,
        )  # fmt: skip
        low, high = res.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            break
    return _clip(float(low), bounds), _clip(float(high), bounds)


def _clip(x: float, bounds: tuple[float, float]) -> float:
    return min(max(x, bounds[0]), bounds[1])


# -- paired tests --------------------------------------------------------------------------------
def mcnemar_exact(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> Comparison:
    """Exact McNemar test on per-problem pass/fail (greedy decoding): the binomial test on the
    discordant pairs (statsmodels), with Newcombe's interval of the pass-rate difference."""
    from statsmodels.stats.contingency_tables import mcnemar

    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _same_problems(x, y)
    a_only, b_only = int(np.sum(x & ~y)), int(np.sum(~x & y))
    table = [[int(np.sum(x & y)), a_only], [b_only, int(np.sum(~x & ~y))]]
    pvalue = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    low, high = newcombe_paired(table)
    return Comparison("mcnemar-exact", len(x), float(x.mean() - y.mean()), low, high, pvalue, a_only, b_only)


def newcombe_paired(table: Sequence[Sequence[int]], level: float = LEVEL) -> tuple[float, float]:
    """Interval of p1 - p2 for paired proportions, [[both, 1 only], [2 only, neither]]: Newcombe's
    hybrid score method (1998, method 10), from the two Wilson intervals and the pairs'
    correlation. Written out because neither scipy nor statsmodels has it. Unlike a bootstrap of
    the differences, it does not collapse to [0, 0] when both sides fail (or pass) every problem:
    0 of 16 against 0 of 16 is about +-0.19, not evidence of equality."""
    (both, one), (two, neither) = (int(v) for v in table[0]), (int(v) for v in table[1])
    n = both + one + two + neither
    p1, p2 = (both + one) / n, (both + two) / n
    l1, u1 = wilson(both + one, n, level)
    l2, u2 = wilson(both + two, n, level)
    margins = (both + one) * (two + neither) * (both + two) * (one + neither)
    cross = both * neither - one * two
    if cross > 0:
        cross = max(cross - n / 2, 0.0)  # Newcombe's continuity correction of phi
    phi = cross / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    low = d - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = d + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(low, -1.0), min(high, 1.0)


def paired_permutation(a: Sequence[float], b: Sequence[float], resamples: int = 9999, seed: int = 0) -> Comparison:
    """Paired permutation test of the mean difference (scipy; swaps a and b within problems),
    for per-problem pass@k estimates of sampled decoding."""
    from scipy.stats import permutation_test

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    _same_problems(x, y)
    if np.all(x == y):
        pvalue = 1.0
    else:
        res = permutation_test(
            (x, y),
            lambda u, v, axis=-1: np.mean(u, axis=axis) - np.mean(v, axis=axis),
            permutation_type="samples",
            n_resamples=resamples,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        )
        pvalue = float(res.pvalue)
    low, high = paired_difference_ci(x, y, seed=seed)
    return Comparison("permutation", len(x), float(x.mean() - y.mean()), low, high, pvalue)


def paired_bootstrap(
    a: Sequence, b: Sequence, metric: Callable[[np.ndarray], float] | None = None,
    resamples: int = 9999, seed: int = 0,
) -> Comparison:  # fmt: skip
    """Paired bootstrap test for match metrics: problems are resampled together for both methods
    and `metric` (the mean by default; a corpus metric such as chrF recomputed from per-problem
    statistics) is taken on each side. The p-value is the two-sided bootstrap p-value of a zero
    difference (the share of resampled differences on the far side of 0, doubled, as in Koehn
    2004's paired bootstrap)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)  # rows: problems (a row may be a vector)
    _same_problems(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    if metric is None:
        observed = float(np.mean(x) - np.mean(y))
        diffs = x[idx].mean(axis=1) - y[idx].mean(axis=1)
    else:
        observed = metric(x) - metric(y)
        diffs = np.array([metric(x[i]) - metric(y[i]) for i in idx])
    if np.all(diffs == 0) or np.array_equal(x, y):
        pvalue = 1.0
    else:
        tail = min(np.sum(diffs <= 0), np.sum(diffs >= 0))
        pvalue = float(min(1.0, 2 * (tail + 1) / (resamples + 1)))  # never 0 from finitely many resamples
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return Comparison("bootstrap", len(x), float(observed), float(low), float(high), pvalue)


def paired_randomization(
    a: Sequence, b: Sequence, metric: Callable[[np.ndarray], float] | None = None,
    resamples: int = 9999, seed: int = 0,
) -> Comparison:  # fmt: skip
    """Paired approximate randomization test (Noreen 1989; Riezler and Maxwell 2005) for match
    metrics and losses: each problem's results are swapped between the two methods at random
    (every one of the 2^n swaps when there are fewer than `resamples`) and `metric` (the mean by
    default; a corpus metric such as chrF recomputed from per-problem statistics) is taken on
    each side. Unlike the bootstrap's p-value it holds at any number of problems: with 4 the
    smallest p is 2/16. The interval is the paired bootstrap's."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    _same_problems(x, y)
    boot = paired_bootstrap(x, y, metric=metric, resamples=resamples, seed=seed)
    n = len(x)
    exact = 2**n <= resamples
    if exact:
        flips = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    else:
        flips = np.random.default_rng(seed).random((resamples, n)) < 0.5
    if np.array_equal(x, y):
        return Comparison("randomization", n, boot.difference, boot.ci_low, boot.ci_high, 1.0)
    shape = (-1,) + (1,) * (x.ndim - 1)
    if metric is None:
        swapped = np.where(flips, y, x).mean(axis=1) - np.where(flips, x, y).mean(axis=1)
    else:
        swapped = np.array(
            [metric(np.where(f.reshape(shape), y, x)) - metric(np.where(f.reshape(shape), x, y)) for f in flips]
        )
    extreme = int(np.sum(np.abs(swapped) >= abs(boot.difference) - 1e-12))
    pvalue = extreme / len(flips) if exact else (extreme + 1) / (resamples + 1)
    return Comparison("randomization", n, boot.difference, boot.ci_low, boot.ci_high, float(min(1.0, pvalue)))


def paired_difference_ci(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval (BCa) of mean(a) - mean(b): the problems' differences resampled."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_ci(d, seed=seed)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels) for the pairs of one task."""
    from statsmodels.stats.multitest import multipletests

    if not len(pvalues):
        return []
    return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]


def _same_problems(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape or x.ndim == 0 or len(x) == 0:
        raise ValueError(
            f"paired tests need per-problem scores of equal, non-zero length (got {x.shape} and {y.shape})"
        )


# -- power ---------------------------------------------------------------------------------------
def mcnemar_problems_needed(a_only: int, b_only: int, problems: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Problems a McNemar test needs to detect the observed gap with `power` at `alpha`
    (Connor 1987: n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2 with psi the
    discordant share and delta the difference of the two discordant shares). Infinite when the
    observed gap is zero."""
    from scipy.stats import norm

    psi, delta = (a_only + b_only) / problems, (a_only - b_only) / problems
    if delta == 0:
        return math.inf
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return float(math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2))


def paired_problems_needed(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> float:
    """Problems a paired test of mean differences needs to detect the observed effect (statsmodels'
    t-test power on the per-problem differences). Infinite when the observed mean difference is 0."""
    from statsmodels.stats.power import TTestPower

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2 or d.mean() == 0:
        return math.inf
    sd = d.std(ddof=1)
    if sd == 0:
        return float(len(d))  # every problem moves the same way: already as sure as it gets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns when its root search leaves its bracket
        n = TTestPower().solve_power(effect_size=abs(d.mean()) / sd, alpha=alpha, power=power, alternative="two-sided")
    if not math.isfinite(n):
        # the root search fails for effects so large that the answer is under its bracket:
        # the smallest paired test (two problems) already has the power
        return 2.0
    return float(math.ceil(n))
