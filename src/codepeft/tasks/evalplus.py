"""HumanEval+ and MBPP+ (EvalPlus) on the shipped release, with EvalPlus's semantics.

A sample is run twice in the sandbox, as EvalPlus runs it: on the base inputs (the original
benchmark's tests) and, when those pass, on the plus inputs; `pass@k` counts samples that pass
both (EvalPlus's "+" score), `base_pass@k` the base inputs alone. Each input's output is
compared with the reference solution's (`codepeft.tasks.evalplus_oracle`): equal, or for floats
within the problem's `atol` (1e-6 when it is 0) and a relative 1e-7, plus EvalPlus's special
oracles for a few problems. Each input gets max(1 s, 4 x the reference's own time) before it
counts as failed; inputs the problem's contract refuses are left out. The first failing input
ends the run (EvalPlus's default fast check).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import pickle
import subprocess
import sys
from dataclasses import replace

from codepeft.data.shipped import read_shipped, shipped_path
from codepeft.errors import CodepeftError
from codepeft.execution import Limits
from codepeft.metrics import pass_at_k_scores
from codepeft.paths import cache_dir
from codepeft.tasks.base import Prompt, Task
from codepeft.tasks.evalplus_oracle import OUTPUT_NOT_NONE, _digest, _normal
from codepeft.tasks.humaneval import split_prompt
from codepeft.tasks.scoring import score_execution

VERSIONS = {"humaneval": "v0.1.10, 164", "mbpp": "v0.2.0, 378"}
FILES = {"humaneval": "evalplus/HumanEvalPlus.jsonl.gz", "mbpp": "evalplus/MbppPlus.jsonl.gz"}
MIN_TIME_LIMIT, TIME_LIMIT_FACTOR, TIME_LIMIT_TOTAL = 1.0, 4.0, 60.0  # EvalPlus's defaults

# MBPP+ stores tuples, sets and complex numbers as JSON lists and strings; EvalPlus restores them
# per task. Each rule: the task numbers it applies to, and how one input (a list of arguments) is rebuilt.
_tuples = lambda xs: [tuple(x) for x in xs]  # noqa: E731


def _deep_tuple(x):
    return tuple(_deep_tuple(i) for i in x) if isinstance(x, list) else x


MBPP_INPUTS = [
    (
        {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809},
        _tuples,
    ),
    ({63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}, lambda a: [_tuples(x) for x in a]),
    ({75, 413, 444, 753}, lambda a: [_tuples(a[0]), a[1]]),
    ({106, 750}, lambda a: [a[0], tuple(a[1])]),
    ({115}, lambda a: [[set(x) if isinstance(x, list) and x else {} for x in a[0]]]),
    ({124}, lambda a: (float(a[0]), complex(a[1]))),
    ({250, 405, 446, 617, 720, 763, 808}, lambda a: [tuple(a[0]), a[1]]),
    ({259, 401, 445}, lambda a: _tuples([_tuples(x) for x in a])),
    ({278}, lambda a: _tuples([[tuple(x) if isinstance(x, list) else x for x in a[0]]])),
    ({307}, lambda a: [tuple(a[0]), a[1], a[2]]),
    ({722}, lambda a: [{k: tuple(v) for k, v in a[0].items()}, *a[1:]]),
    ({252}, lambda a: [complex(a[0])]),
    ({580, 615, 791}, _deep_tuple),
]


def _mbpp_inputs(task_id: str, inputs: list) -> list:
    number = int(task_id.split("/")[-1])
    for numbers, rebuild in MBPP_INPUTS:
        if number in numbers:
            return [rebuild(a) for a in inputs]
    return inputs


@functools.cache
def load_problems(dataset: str) -> tuple[dict, ...]:
    problems = []
    for rec in read_shipped(FILES[dataset]):
        problem = dict(rec)
        if dataset == "mbpp":
            problem["base_input"] = _mbpp_inputs(problem["task_id"], problem["base_input"])
            problem["plus_input"] = _mbpp_inputs(problem["task_id"], problem["plus_input"])
        problems.append(problem)
    return tuple(problems)


@functools.cache
def oracle(dataset: str) -> dict:
    """The reference's outputs (as `evalplus_oracle.expected` forms) and times, computed once per
    dataset file and machine (here 36 s for HumanEval+, 106 s for MBPP+)."""
    digest = hashlib.sha256(shipped_path(FILES[dataset]).read_bytes()).hexdigest()[:16]
    path = cache_dir() / "evalplus" / f"{dataset}-{digest}-v2.pkl"  # v2: with the expected forms
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".building")
        out = subprocess.run(
            [sys.executable, "-m", "codepeft.tasks.evalplus_oracle", dataset, str(partial)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise CodepeftError(f"could not compute the {dataset}+ reference outputs:\n{out.stderr[-2000:]}")
        partial.rename(path)
    with path.open("rb") as f:
        return pickle.load(f)


# The program run in the sandbox: the sample's code is executed in a fresh namespace, then
# called on each input with its own time limit, output silenced; the first mismatch raises.
HARNESS = """
import base64, hashlib, io, math, pickle, signal, sys

_DATA = pickle.loads(base64.b64decode(_PAYLOAD))


class _Slow(BaseException):
    pass


class _Digest:
    def __init__(self, hex, raw):
        self.hex, self.raw = hex, raw


def _alarm(signum, frame):
    raise _Slow()


def _floats(x):
    return isinstance(x, float) or (isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x))


def _close(out, exp, atol):
    # numpy.allclose(out, exp, rtol=1e-07, atol=atol): elementwise, infinities equal to themselves
    if isinstance(exp, (list, tuple)):
        return isinstance(out, (list, tuple)) and len(out) == len(exp) and all(
            _close(o, e, atol) for o, e in zip(out, exp))
    if isinstance(out, (list, tuple)):
        return all(_close(o, exp, atol) for o in out)
    if out == exp:
        return True
    return abs(out - exp) <= atol + 1e-07 * abs(exp)


def _poly(xs, x):
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _surface_area(base_edge, height):
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 4 * (base_edge * slant) / 2)


def _digit_distance(a, b):
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(width), y.zfill(width)))


def _matches(dataset, entry, out, exp, inp, atol):
    if isinstance(exp, _Digest):  # a very large output: equal values have equal digests
        try:
            if hashlib.sha256(pickle.dumps(out, 4)).hexdigest() == exp.raw:
                return True, atol  # pickled to the same bytes as the reference: equal
        except Exception:
            pass
        return _digest(out) == exp.hex, atol
    exact = out == exp
    if dataset == "mbpp":
        if entry == "are_equivalent":
            exact = True
        elif entry == "sum_div":
            exact = exact or out == 0
        elif entry == "surface_Area":
            exact = exact or abs(out - _surface_area(*inp)) <= atol
        elif entry == "digit_distance_nums":
            exact = exact or out == _digit_distance(*inp)
        elif entry in _DATA["set_equal"]:
            exact = set(out) == set(exp)
        elif entry in _DATA["not_none"]:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry == "find_zero":
        return abs(_poly(*inp, out)) <= atol, atol
    if atol == 0 and _floats(exp):
        atol = 1e-6  # and it stays so for the following inputs, as in EvalPlus
    if not exact and atol != 0:
        ok = type(out) == type(exp) and (not isinstance(exp, (list, tuple)) or len(out) == len(exp))
        return ok and _close(out, exp, atol), atol
    return bool(exact), atol


def _run():
    d = _DATA
    quiet = io.StringIO()
    real = sys.stdout, sys.stderr
    signal.signal(signal.SIGALRM, _alarm)
    namespace = {}
    sys.stdout = sys.stderr = quiet
    try:
        exec(_CODE, namespace)
        fn = namespace[d["entry"]]
    finally:
        sys.stdout, sys.stderr = real
    atol = d["atol"]
    expected = [_Digest(*e[1:]) if e[:1] == ("sha256",) else e[0] for e in d["expected"]]
    for i, (inp, exp, limit) in enumerate(zip(d["inputs"], expected, d["limits"])):
        sys.stdout = sys.stderr = quiet
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            out = fn(*inp)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = real
            quiet.seek(0)
            quiet.truncate()
        ok, atol = _matches(d["dataset"], d["entry"], out, exp, inp, atol)
        if not ok:
            raise AssertionError(f"{d['part']} input {d['index'][i]}: wrong output")


_run()
"""

HARNESS_HEAD = "import hashlib\n\n" + inspect.getsource(_normal) + "\n" + inspect.getsource(_digest)


def harness_program(payload: str, code: str) -> str:
    """The sandboxed program: HARNESS on a problem's encoded payload (`_payload`) and a sample's code."""
    return f"_PAYLOAD = {payload!r}\n_CODE = {code!r}\n{HARNESS_HEAD}{HARNESS}"


def encode_payload(payload: dict) -> str:
    return base64.b64encode(pickle.dumps(payload)).decode()


@functools.lru_cache(maxsize=1024)
def _payload(dataset: str, part: str, task_id: str) -> str:
    """A problem's inputs, expected outputs and time limits, pickled and base64-encoded: the
    same for every sample of the problem, so built once (large outputs' digests take seconds)."""
    problem = next(p for p in load_problems(dataset) if p["task_id"] == task_id)
    truth = oracle(dataset)[task_id]
    refused = set(truth[f"{part}_refused"])
    keep = [i for i in range(len(problem[f"{part}_input"])) if i not in refused]
    payload = {
        "dataset": dataset,
        "part": part,
        "entry": problem["entry_point"],
        "atol": problem["atol"],
        "index": keep,
        "inputs": [problem[f"{part}_input"][i] for i in keep],
        "expected": [truth[f"{part}_expected"][i] for i in keep],
        "limits": [max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * truth[f"{part}_time"][i]) for i in keep],
        "set_equal": SET_EQUAL,
        "not_none": OUTPUT_NOT_NONE,
    }
    return encode_payload(payload)


SET_EQUAL = (
    "similar_elements",
    "find_char_long",
    "common_in_nested_lists",
    "extract_singly",
    "larg_nnum",
    "intersection_array",
    "find_dissimilar",
    "Diff",
)


class EvalPlus(Task):
    def __init__(self, dataset: str, part: str = "base"):
        if dataset not in FILES:
            raise CodepeftError(f"no EvalPlus dataset {dataset!r}; use {', '.join(FILES)}")
        label = "HumanEval+" if dataset == "humaneval" else "MBPP+"
        super().__init__(
            name=f"{dataset}-plus",
            description=f"{label}: pass@k on the base tests and on base + EvalPlus's extra tests",
            metrics=("pass@k", "base_pass@k"),
            source=f"{label} {VERSIONS[dataset]} problems (Apache-2.0), shipped",
        )
        self.dataset, self.part = dataset, part
        if dataset == "mbpp":  # the model writes the whole function, helpers included
            self.stop = ["\nclass", "\nif __name__", "\nprint(", "\nassert", "\n```"]

    def problems(self):
        return [dict(p) for p in load_problems(self.dataset)]

    def prompt(self, problem):
        if self.dataset == "humaneval":
            _, doc, signature = split_prompt(problem)
            instruction = f"Write a Python function `{signature}` to solve the following problem:\n{doc}"
            return Prompt(instruction=instruction, answer_prefix=problem["prompt"])
        # MBPP+: a task text with one example assertion; the model writes the whole function
        text = problem["prompt"].strip().strip('"').strip()
        return Prompt(instruction=text, answer_prefix="", plain=f'"""\n{text}\n"""\n')

    def limits(self, problem: dict) -> Limits:
        times = oracle(self.dataset)[problem["task_id"]][f"{self.part}_time"]
        total = min(TIME_LIMIT_TOTAL, sum(max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * t) for t in times)) + 2
        return replace(Limits(), cpu_seconds=total, wall_seconds=total + 2, memory_mb=4096)

    def program(self, problem, code):
        return harness_program(_payload(self.dataset, self.part, problem["task_id"]), code)

    def reference_seconds(self, problem: dict) -> float:
        """How long the reference took on this part's inputs (to start the longest runs first)."""
        return sum(oracle(self.dataset)[problem["task_id"]][f"{self.part}_time"])

    def score(self, problems, completions, ks, pool):
        """Base inputs for every sample, plus inputs for those that passed them (EvalPlus's "+")."""
        result = score_execution(self, problems, completions, ks, pool)
        again = [
            (i, j)
            for i, r in enumerate(result["problems"])
            for j, s in enumerate(r["samples"])
            if s["outcome"] == "passed"
        ]
        plus_task = EvalPlus(self.dataset, "plus")
        # longest first (by the reference's time): a few problems take seconds, and started last
        # they would leave the other workers idle at the end
        again.sort(key=lambda ij: -plus_task.reference_seconds(problems[ij[0]]))
        jobs = [
            (
                plus_task.program(problems[i], plus_task.code_of(problems[i], completions[i][j])),
                "python",
                plus_task.limits(problems[i]),
            )
            for i, j in again
        ]
        plus = dict(zip(again, pool.map(jobs) if jobs else [], strict=True))
        for i, record in enumerate(result["problems"]):
            for j, sample in enumerate(record["samples"]):
                sample["base_outcome"], sample["base_error_type"] = sample["outcome"], sample["error_type"]
                extra = plus.get((i, j))
                sample["plus_outcome"] = extra.outcome.value if extra else "not run (base failed)"
                sample["plus_error_type"] = extra.error_type if extra else None
                sample["outcome"] = "passed" if extra is not None and extra.passed else "failed"
                sample["error_type"] = sample["plus_error_type"] or sample["base_error_type"]
            record["base_passed"] = record["passed"]
            record["passed"] = sum(s["outcome"] == "passed" for s in record["samples"])
        plus_scores = pass_at_k_scores([(r["n"], r["passed"]) for r in result["problems"]], ks)
        base_scores = pass_at_k_scores([(r["n"], r["base_passed"]) for r in result["problems"]], ks)
        result["scores"] = {**plus_scores, **{f"base_{metric}": v for metric, v in base_scores.items()}}
        return result
