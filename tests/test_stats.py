"""The statistics layer against independent references: scipy's binomial test, exact enumeration,
closed forms, textbook Holm, and a simulation of McNemar's power."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codepeft import stats


def _wilson_closed_form(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
@settings(max_examples=60, deadline=None)
def test_wilson_equals_the_closed_form_and_stays_in_range(kn):
    k, n = kn
    low, high = stats.wilson(k, n)
    ref = _wilson_closed_form(k, n)
    assert low == pytest.approx(max(ref[0], 0.0), abs=1e-12) and high == pytest.approx(min(ref[1], 1.0), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_zero_of_164_has_a_real_upper_bound():
    low, high = stats.wilson(0, 164)
    assert low == 0.0 and 0.02 < high < 0.025


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=80))
@settings(max_examples=60, deadline=None)
def test_exact_mcnemar_is_the_binomial_test_on_discordant_pairs(pairs):
    from scipy.stats import binomtest

    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    c = stats.mcnemar_exact(a, b)
    only_a, only_b = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
    assert (c.a_only, c.b_only) == (only_a, only_b)
    expected = 1.0 if only_a + only_b == 0 else binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert c.pvalue == pytest.approx(expected, rel=1e-9)
    assert c.difference == pytest.approx((only_a - only_b) / len(pairs))
    assert -1.0 <= c.ci_low <= c.ci_high <= 1.0


def test_paired_permutation_equals_exact_enumeration():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, 10)
    b = a - rng.normal(0.2, 0.3, 10)
    d = a - b
    observed = abs(d.mean())
    flips = [abs((d * np.array(s)).mean()) for s in itertools.product((1, -1), repeat=len(d))]
    exact = np.mean([f >= observed - 1e-12 for f in flips])
    c = stats.paired_permutation(a, b, resamples=2**10)  # >= every assignment: scipy enumerates them
    assert c.pvalue == pytest.approx(exact, rel=1e-9)
    assert c.test == "permutation" and c.difference == pytest.approx(d.mean())


def test_paired_bootstrap_finds_a_planted_gap_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    real = stats.paired_bootstrap(base + 0.1 + rng.normal(0, 0.05, 200), base)
    null = stats.paired_bootstrap(base + rng.normal(0, 0.05, 200), base)
    assert real.pvalue < 0.001 and real.ci_low > 0.05 and real.ci_low <= real.difference <= real.ci_high
    assert null.pvalue > 0.05 and null.ci_low < 0 < null.ci_high
    same = stats.paired_bootstrap(base, base)
    assert same.pvalue == 1.0 and same.difference == 0.0


def test_paired_bootstrap_recomputes_a_corpus_metric_per_resample():
    from sacrebleu.metrics import CHRF

    from codepeft.metrics.per_problem import corpus_chrf

    hyps_a, hyps_b = ["x = 1", "print(y)", "return a + b"], ["x = 2", "print(z)", "return b"]
    refs = ["x = 1", "print(y)", "return a + b"]
    sa = np.array(CHRF()._extract_corpus_statistics(hyps_a, [refs]), dtype=float)
    sb = np.array(CHRF()._extract_corpus_statistics(hyps_b, [refs]), dtype=float)
    c = stats.paired_bootstrap(sa, sb, metric=corpus_chrf, resamples=200)
    expected = CHRF().corpus_score(hyps_a, [refs]).score - CHRF().corpus_score(hyps_b, [refs]).score
    assert c.difference == pytest.approx(expected)


def test_holm_matches_the_textbook_procedure():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([]) == []


@given(st.lists(st.floats(0, 1), min_size=2, max_size=60))
@settings(max_examples=40, deadline=None)
def test_bootstrap_intervals_never_leave_the_metric_range(values):
    low, high = stats.bootstrap_ci(values, bounds=(0.0, 1.0), resamples=300)
    assert 0.0 <= low <= high <= 1.0


def test_metric_bounds():
    assert stats.metric_bounds("pass@1") == (0.0, 1.0)
    assert stats.metric_bounds("chrf") == (0.0, 100.0)
    assert stats.metric_bounds("loss")[0] == 0.0


def test_mcnemar_sample_size_gives_the_promised_power():
    """Simulate paired outcomes with 15% / 5% discordant shares at the computed size: the exact
    test rejects in about 80% of studies (Connor's formula is approximate; exact tests are a bit
    conservative)."""
    from statsmodels.stats.contingency_tables import mcnemar

    n = int(stats.mcnemar_problems_needed(15, 5, 100))
    assert 100 < n < 300
    rng = np.random.default_rng(1)
    rejected = 0
    for _ in range(400):
        u = rng.uniform(size=n)
        a_only, b_only = int((u < 0.15).sum()), int(((u >= 0.15) & (u < 0.20)).sum())
        rejected += mcnemar([[0, a_only], [b_only, 0]], exact=True).pvalue < 0.05
    assert 0.7 <= rejected / 400 <= 0.9
    assert stats.mcnemar_problems_needed(5, 5, 100) == math.inf


def test_paired_sample_size_shrinks_as_the_effect_grows():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 50)
    noise = rng.normal(0, 0.2, 50)
    small = stats.paired_problems_needed(base + 0.05 + noise, base)
    large = stats.paired_problems_needed(base + 0.2 + noise, base)
    assert large < small < math.inf


def test_randomization_equals_exact_enumeration_and_is_honest_at_four_problems():
    from itertools import product

    a, b = np.array([2.1, 2.4, 2.0, 2.6]), np.array([2.3, 2.5, 2.2, 2.9])  # a lower on all four
    c = stats.paired_randomization(a, b)
    d = a - b
    swaps = [np.mean(np.array(signs) * d) for signs in product((1, -1), repeat=4)]
    expected = np.mean(np.abs(swaps) >= abs(d.mean()) - 1e-12)
    assert c.pvalue == pytest.approx(expected) == pytest.approx(2 / 16)  # never significant on 4 problems
    assert c.difference == pytest.approx(d.mean()) and c.ci_low <= c.difference <= c.ci_high
    rng = np.random.default_rng(0)
    base = rng.random(200)
    assert stats.paired_randomization(base - 0.1 + rng.normal(0, 0.05, 200), base).pvalue < 0.001
    assert stats.paired_randomization(base + rng.normal(0, 0.05, 200), base).pvalue > 0.05
    assert stats.paired_randomization(base, base).pvalue == 1.0


def test_randomization_swaps_a_corpus_metrics_statistics_per_problem():
    from codepeft.metrics.per_problem import corpus_chrf, problem_scores
    from codepeft.tasks.match import score_match

    refs = [f"x = foo({i}) + bar" for i in range(12)]
    good = score_match([{"task_id": str(i), "output": r} for i, r in enumerate(refs)], [[r] for r in refs], [1])
    bad = score_match([{"task_id": str(i), "output": r} for i, r in enumerate(refs)], [["pass"] for _ in refs], [1])
    sa = np.array([r["detail"] for r in problem_scores(good) if r["metric"] == "chrf"])
    sb = np.array([r["detail"] for r in problem_scores(bad) if r["metric"] == "chrf"])
    c = stats.paired_randomization(sa, sb, metric=corpus_chrf, resamples=500)
    assert c.difference == pytest.approx(corpus_chrf(sa) - corpus_chrf(sb)) and c.difference > 50
    assert c.pvalue <= 2 / 501 + 1e-9  # every random swap narrows the gap


def test_newcombe_interval_of_paired_proportions_is_honest_when_nothing_differs():
    none = stats.newcombe_paired([[0, 0], [0, 16]])  # both fail all 16
    upper = stats.wilson(0, 16)[1]
    assert none == pytest.approx((-upper, upper))  # no correlation information: the marginal bounds
    low, high = stats.newcombe_paired([[12, 9], [2, 21]])  # correlated pairs, 9 vs 2 discordant
    assert low < 9 / 44 - 2 / 44 < high and low >= -1 and high <= 1
    c = stats.mcnemar_exact(np.zeros(16, bool), np.zeros(16, bool))
    assert c.pvalue == 1.0 and c.ci_high > 0.15 and c.ci_low < -0.15  # not a proof of equality


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_newcombe_interval_contains_the_difference_and_stays_in_range(pairs):
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    table = [[int(np.sum(x & y)), int(np.sum(x & ~y))], [int(np.sum(~x & y)), int(np.sum(~x & ~y))]]
    low, high = stats.newcombe_paired(table)
    assert -1 <= low <= x.mean() - y.mean() + 1e-12 and x.mean() - y.mean() - 1e-12 <= high <= 1


def test_problems_needed_for_a_huge_effect_is_the_smallest_paired_test():
    """statsmodels' power solver returns NaN for effects this large (the answer is below its
    bracket); a study with three problems and one method far ahead must still get a report."""
    needed = stats.paired_problems_needed([1.0, 0.98, 1.0], [0.0, 0.0, 0.01])
    assert needed == 2.0
