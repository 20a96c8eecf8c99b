"""Many adapters, one base: a study's evaluation phase, one process per cell vs together.

Six LoRA adapters of SmolLM2-135M-Instruct (trained a few steps each on CoNaLa, seeds 0-5; not
timed) are evaluated on HumanEval, MBPP+ and CoNaLa's held-out loss, greedy, as a study does:
  - one process per cell: `codepeft eval RUN` in a fresh process for each adapter, one after
    the other (what a study with `eval.together: false` and one worker runs after training);
  - together: `codepeft eval RUN1 ... RUN6`, one process evaluating all six with
    `codepeft.evaluation_together` (the base loaded once, the adapters' rows in mixed-adapter
    batches; what a study's group worker runs).
Wall time of each phase, process starts included; every task result is compared with the
separate one (all fields but wall-clock times).

    .venv/bin/python benchmarks/eval_together.py                 # ~10 min on 2 cores
    .venv/bin/python benchmarks/eval_together.py --adapters 2 --limit 2 --tasks humaneval   # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402


def train_adapters(model: str, count: int, steps: int, root: Path) -> list[Path]:
    """`count` LoRA runs (seeds 0..count-1), reused when already complete."""
    from codepeft import load_config, train

    runs = []
    for seed in range(count):
        run_dir = root / f"lora-seed{seed}"
        info = run_dir / "run.json"
        if not (info.is_file() and json.loads(info.read_text()).get("status") == "completed"):
            overrides = [f"model.name_or_path={model}", "method.name=lora", f"seed={seed}",
                         "data.train.0.source=conala", "data.format=chat", "data.max_length=128",
                         f"train.max_steps={steps}", "train.batch_size=4", "data.eval_limit=8"]  # fmt: skip
            train(load_config(None, overrides), run_dir)
        runs.append(run_dir)
    return runs


def _results(directory: Path, root: Path) -> dict:
    from codepeft.evaluation import without_timings

    return {
        f.name: without_timings(json.loads(f.read_text().replace(str(root), "ROOT")))
        for f in sorted(directory.glob("*.json"))
    }


def compare(root: Path, runs: list[Path]) -> dict:
    """How the together results match the separate ones: whole task results (wall-clock times
    excepted), scores, completions one by one; and each task's time (separate: summed over the
    processes; together: the shared time every member records)."""
    whole = scores = completions = same_completions = 0
    per_task: dict[str, dict] = {}
    for run in runs:
        want, got = _results(root / "separate" / run.name, root), _results(root / "together" / run.name, root)
        for name, a in want.items():
            b = got.get(name, {})
            whole += a == b
            scores += a.get("scores") == b.get("scores")
            for p, q in zip(a.get("problems", []), b.get("problems", []), strict=True):
                for x, y in zip(p.get("samples", []), q.get("samples", []), strict=True):
                    completions += 1
                    same_completions += x.get("completion") == y.get("completion")
            task = name.removesuffix(".json")
            times = per_task.setdefault(task, {"separate_s": 0.0, "together_s": 0.0})
            times["separate_s"] += json.loads((root / "separate" / run.name / name).read_text())["seconds"]
            times["together_s"] = json.loads((root / "together" / run.name / name).read_text())["seconds"]
    return {
        "results_compared": sum(len(list((root / "separate" / r.name).glob("*.json"))) for r in runs),
        "results_identical": whole,
        "scores_identical": scores,
        "completions": completions,
        "completions_identical": same_completions,
        "per_task": {t: {k: round(v, 1) for k, v in times.items()} for t, times in per_task.items()},
        "humaneval_pass1": [
            json.loads(p.read_text())["scores"]["pass@1"]["value"]
            for r in runs
            if (p := root / "together" / r.name / "humaneval.json").is_file()
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapters", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="training steps per adapter (not timed)")
    parser.add_argument("--tasks", default="humaneval,mbpp-plus,conala-loss")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, help="where the adapters are kept between runs (default: a temp dir)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    root = args.work or Path(tempfile.mkdtemp(prefix="codepeft-together-"))
    runs = train_adapters(args.model, args.adapters, args.steps, root / "runs")
    tasks = args.tasks.split(",")
    from codepeft.tasks.evalplus import oracle

    for task in tasks:  # EvalPlus's reference outputs are computed once per machine: not timed
        if task.endswith("-plus"):
            oracle(task.removesuffix("-plus"))

    separate_s = time.perf_counter()
    for run in runs:
        subprocess.run(
            [sys.executable, "-m", "codepeft.cli", "eval", str(run), "--tasks", args.tasks, "--limit", str(args.limit),
             "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size), "--backend", "hf",
             "--output-dir", str(root / "separate" / run.name)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    separate_s = time.perf_counter() - separate_s

    together_s = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "codepeft.cli", "eval", *map(str, runs), "--tasks", args.tasks, "--limit",
         str(args.limit), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
         "--backend", "hf", "--output-dir", str(root / "together")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"codepeft eval with {len(runs)} targets failed: {done.stderr[-2000:]}")
    together_s = time.perf_counter() - together_s

    result = {
        "machine": machine(),
        "model": args.model,
        "adapters": args.adapters,
        "tasks": tasks,
        "limit": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "separate_s": round(separate_s, 1),
        "together_s": round(together_s, 1),
        "speedup": round(separate_s / together_s, 2),
        **compare(root, runs),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
