"""Property-based tests (hypothesis): the config parser, pass@k and the robustness metrics, and
the ReCode code transforms (parse -> transform -> parse, and semantics kept on HumanEval)."""

from __future__ import annotations

import ast
import itertools
import math
import random

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from codepeft.config import RunConfig, apply_overrides, parse_config
from codepeft.errors import CodepeftError
from codepeft.execution import Outcome, execute
from codepeft.metrics.passk import pass_at_k
from codepeft.tasks.humaneval import humaneval_problems
from codepeft.tasks.perturb import PARTIAL_CATEGORIES, PERTURBATIONS, partial_code
from codepeft.tasks.recode import robust_metrics

# --- the config parser --------------------------------------------------------------------------

KEY = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
SCALAR = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
)


@given(path=st.lists(KEY, min_size=1, max_size=4), value=SCALAR)
def test_set_override_stores_the_value_yaml_would_read(path, value):
    """`--set a.b.c=<value as YAML writes it>` puts exactly that value at a.b.c."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("...").strip()  # YAML's document end marker after a bare scalar
    result = apply_overrides({}, [f"{'.'.join(path)}={text}"])
    node = result
    for part in path[:-1]:
        node = node[part]
    got = node[path[-1]]
    assert got == value or (isinstance(value, float) and math.isclose(got, value, rel_tol=1e-6))


@given(path=st.lists(KEY, min_size=1, max_size=3), value=SCALAR, other=st.dictionaries(KEY, SCALAR, max_size=3))
def test_override_leaves_the_rest_of_the_config_alone(path, value, other):
    assume(path[0] not in other)
    raw = {"keep": dict(other)}
    assume(path[0] != "keep")
    result = apply_overrides(raw, [f"{'.'.join(path)}={yaml.safe_dump(value).strip().removesuffix('...').strip()}"])
    assert result["keep"] == other and raw == {"keep": other}  # the input is not modified


SECTIONS = ["model", "method", "data", "train", "seed", "name", "trian", "modle", "output_dir"]
FIELDS = ["name", "max_steps", "batch_size", "learning_rate", "format", "max_length", "r", "dtype", "lerning_rate"]
VALUE = st.one_of(SCALAR, st.none(), st.lists(SCALAR, max_size=2))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.dictionaries(
        st.sampled_from(SECTIONS),
        st.one_of(VALUE, st.dictionaries(st.sampled_from(FIELDS), VALUE, max_size=4)),
        max_size=5,
    )
)
def test_any_config_is_either_valid_or_one_clear_error(raw):
    """Whatever a user writes, parsing returns a RunConfig or raises CodepeftError naming the
    config (never a raw pydantic or Python error)."""
    try:
        assert isinstance(parse_config(raw, "fuzz.yaml"), RunConfig)
    except CodepeftError as err:
        assert "fuzz.yaml" in str(err)


# --- pass@k and the robustness metrics -----------------------------------------------------------

N_C_K = st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n)))


@given(N_C_K)
def test_pass_at_k_is_the_probability_that_k_draws_hold_a_pass(nck):
    n, c, k = nck
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert math.isclose(value, exact, rel_tol=1e-9, abs_tol=1e-12)
    if k == 1:
        assert math.isclose(value, c / n)
    assert (value == 0.0) == (c == 0)


@given(N_C_K)
def test_pass_at_k_grows_with_k_and_with_passes(nck):
    n, c, k = nck
    if k < n:
        assert pass_at_k(n, c, k + 1) >= pass_at_k(n, c, k) - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= pass_at_k(n, c, k) - 1e-12


@settings(max_examples=60)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_enumerating_every_k_subset(nck):
    n, c, k = nck
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert math.isclose(pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets), abs_tol=1e-12)


@given(st.integers(1, 10), st.integers(1, 4), st.integers(0, 4), st.randoms(use_true_random=False))
def test_robust_metrics_bounds(n, problems, n_variants, rnd):
    k = rnd.randint(1, n)
    nominal = [[rnd.random() < 0.5 for _ in range(n)] for _ in range(problems)]
    perturbed = [[[rnd.random() < 0.5 for _ in range(n)] for _ in range(n_variants)] for _ in range(problems)]
    m = robust_metrics(nominal, perturbed, k)
    assert 0.0 <= m[f"robust_pass@{k}"] <= m[f"nominal@{k}"] + 1e-12 <= 1.0 + 1e-12
    assert 0.0 <= m[f"robust_relative@{k}"] <= 1.0
    if m[f"nominal@{k}"] > 0:
        assert 0.0 <= m[f"robust_drop@{k}"] <= 1.0 + 1e-12
    # variants identical to the nominal samples: nothing changes
    same = robust_metrics(nominal, [[list(b)] * max(1, n_variants) for b in nominal], k)
    assert math.isclose(same[f"robust_pass@{k}"], same[f"nominal@{k}"]) and same[f"robust_relative@{k}"] == 0.0


# --- the code transforms ------------------------------------------------------------------------

PROBLEMS = humaneval_problems()
TRANSFORMS = [(cat, name) for cat, table in PERTURBATIONS.items() for name in table]


def _program(problem: dict) -> str:
    body = problem["prompt"] + problem["canonical_solution"]
    return body + "\n" + problem["test"] + f"\ncheck({problem['entry_point']})\n"


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TRANSFORMS), st.integers(0, len(PROBLEMS) - 1), st.integers(0, 10**6))
def test_transformed_code_parses(transform, index, seed):
    category, name = transform
    problem = PROBLEMS[index]
    base = partial_code(problem) if category in PARTIAL_CATEGORIES else problem
    assume(base is not None)
    ast.parse(base["prompt"] + base["canonical_solution"])
    fn, _ = PERTURBATIONS[category][name]
    out = fn(base, random.Random(seed))
    assume(out is not None)
    ast.parse(out["prompt"] + out["canonical_solution"])  # parse -> transform -> parse
    assert out["entry_point"] in out["prompt"] + out["canonical_solution"]


@pytest.mark.timeout(900)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TRANSFORMS), st.integers(0, len(PROBLEMS) - 1), st.integers(0, 10**6))
def test_transformed_humaneval_problem_still_passes_its_tests(transform, index, seed):
    """Semantics kept: the canonical solution of the transformed problem passes the original tests
    (with random seeds beyond the ones the ReCode task uses)."""
    category, name = transform
    problem = PROBLEMS[index]
    base = partial_code(problem) if category in PARTIAL_CATEGORIES else problem
    assume(base is not None)
    fn, _ = PERTURBATIONS[category][name]
    out = fn(base, random.Random(seed))
    assume(out is not None)
    result = execute(_program(out), "python")
    assert result.outcome is Outcome.PASSED, (category, name, problem["task_id"], result.stderr[-400:])
