"""What EvalPlus compares against: the reference solution's output and running time on every
test input, computed once per machine and dataset file and cached (trusted reference code from
the shipped data, run in a child process, as EvalPlus runs it in its own).

Run as `python -m codepeft.tasks.evalplus_oracle DATASET OUT.pkl`.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import pickle
import sys
import time

# MBPP+ tasks whose outputs EvalPlus reduces to "is not None" (unserialisable matches)
OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")


def _normal(x):
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):  # bools too; hex has no digit limit
        return ("int", hex(int(x)))
    if isinstance(x, list | tuple):
        return type(x)(_normal(i) for i in x)
    if isinstance(x, dict):
        return ("dict", sorted((repr(_normal(k)), repr(_normal(v))) for k, v in x.items()))
    if isinstance(x, set | frozenset):
        return ("set", sorted(repr(_normal(i)) for i in x))
    return x


def _digest(x) -> str:
    return hashlib.sha256(repr(_normal(x)).encode()).hexdigest()


LARGE_OUTPUT = 16_384  # bytes pickled: larger outputs travel as a digest


def expected(value):
    """(value,) or, for a very large output (a few HumanEval+ inputs make megabytes), ("sha256",
    digest of its normalised repr, digest of its pickle): normalised, ints, integral floats and
    bools are alike and dicts and sets sorted, so values equal under `==` have equal digests.
    Normalising takes seconds in pure Python; an output that pickles (protocol 4, fixed, as the
    sandbox's Python may be another version) to the reference's very bytes is equal without it."""
    pickled = pickle.dumps(value, 4)
    if len(pickled) <= LARGE_OUTPUT:
        return (value,)
    return ("sha256", _digest(value), hashlib.sha256(pickled).hexdigest())


def contract_function(problem: dict, dataset: str) -> str | None:
    """The entry point's header with the problem's input contract as its body (None: no contract)."""
    if not problem.get("contract", "").strip():
        return None
    if dataset == "humaneval":  # the prompt ends inside the function, after its docstring
        return problem["prompt"] + problem["contract"] + "\n    return None\n"
    code = problem["canonical_solution"]
    node = next(
        n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"]
    )
    lines = code.splitlines(keepends=True)
    header = "".join(lines[node.lineno - 1 : node.body[0].lineno - 1])
    first = next(line for line in problem["contract"].splitlines() if line.strip())
    return header + problem["contract"] + f"\n{first[: len(first) - len(first.lstrip())]}return None\n"


def reference(problem: dict, dataset: str) -> dict:
    """Expected forms of the outputs and seconds per base and plus input, and the inputs the
    contract refuses."""
    code = problem["canonical_solution"] if dataset == "mbpp" else problem["prompt"] + problem["canonical_solution"]
    namespace: dict = {}
    exec(code, namespace)
    fn = namespace[problem["entry_point"]]
    check = None
    if (contract := contract_function(problem, dataset)) is not None:
        checking = dict(namespace)
        exec(contract, checking)
        check = checking[problem["entry_point"]]
    out: dict = {}
    for part in ("base", "plus"):
        outputs, seconds, refused = [], [], []
        for i, inp in enumerate(problem[f"{part}_input"]):
            if check is not None:
                try:
                    check(*copy.deepcopy(inp))
                except AssertionError:
                    refused.append(i)
                    outputs.append(None)
                    seconds.append(0.0)
                    continue
            args = copy.deepcopy(inp)
            start = time.time()
            result = fn(*args)
            seconds.append(time.time() - start)
            outputs.append(result is not None if problem["entry_point"] in OUTPUT_NOT_NONE else result)
        # the outputs as the sandbox receives them (`expected`); the raw values are not kept
        out[f"{part}_expected"] = [expected(v) for v in outputs]
        out[f"{part}_time"], out[f"{part}_refused"] = seconds, refused
    return out


def main() -> None:
    from codepeft.tasks.evalplus import load_problems

    dataset, path = sys.argv[1], sys.argv[2]
    result = {p["task_id"]: reference(p, dataset) for p in load_problems(dataset)}
    with open(path, "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main()
