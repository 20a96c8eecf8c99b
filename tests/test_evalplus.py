"""HumanEval+ / MBPP+: the reference passes, and codepeft's verdicts agree with the `evalplus`
package's own evaluator on a sample set of passing, failing, timing-out and crashing programs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

from codepeft.data.shipped import shipped_path
from codepeft.execution import SandboxPool
from codepeft.tasks import get_task

SUBSET = [f"HumanEval/{i}" for i in (0, 1, 2, 3, 4, 12, 15, 38, 116, 130)]  # 15, 130: huge outputs; 116: a contract
KINDS = {
    "reference": None,
    "wrong": "    return None\n",
    "endless": "    while True:\n        pass\n",
    "crash": "    raise RuntimeError('boom')\n",
    "syntax": "    return (\n",
}


def test_humaneval_plus_lists_base_and_plus_scores_and_the_reference_passes_both():
    task = get_task("humaneval-plus")
    problems = [p for p in task.problems() if p["task_id"] in SUBSET]
    result = task.score(
        problems, [[p["canonical_solution"], "    return None\n"] for p in problems], [1], SandboxPool(2)
    )
    assert result["scores"]["pass@1"]["value"] == 0.5 and result["scores"]["base_pass@1"]["value"] == 0.5
    sample = result["problems"][0]["samples"][1]
    assert sample["base_outcome"] == "failed" and sample["plus_outcome"] == "not run (base failed)"


def test_verdicts_agree_with_the_evalplus_package(tmp_path):
    import evalplus  # noqa: F401  (scripts/setup.sh installs it; the comparison runs it as a program)
    task = get_task("humaneval-plus")
    problems = [p for p in task.problems() if p["task_id"] in SUBSET]
    bodies = [[KINDS[k] or p["canonical_solution"] for k in KINDS] for p in problems]
    override = tmp_path / "HumanEvalPlus.jsonl"
    with gzip.open(shipped_path("evalplus/HumanEvalPlus.jsonl.gz"), "rt") as f:
        override.write_text("".join(line for line in f if json.loads(line)["task_id"] in SUBSET))
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        "".join(
            json.dumps({"task_id": p["task_id"], "solution": p["prompt"] + body}) + "\n"
            for p, bs in zip(problems, bodies, strict=True)
            for body in bs
        )
    )
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(override), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    subprocess.run(
        [sys.executable, "-m", "evalplus.evaluate", "--dataset", "humaneval", "--samples", str(samples)],
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    theirs = json.loads((tmp_path / "samples_eval_results.json").read_text())["eval"]
    ours = task.score(problems, bodies, [1], SandboxPool(2))["problems"]
    compared = 0
    for record in ours:
        for kind, mine, their in zip(KINDS, record["samples"], theirs[record["task_id"]], strict=True):
            where = (record["task_id"], kind)
            assert (mine["base_outcome"] == "passed") == (their["base_status"] == "pass"), where
            plus_theirs = their["base_status"] == their["plus_status"] == "pass"
            assert (mine["outcome"] == "passed") == plus_theirs, where
            compared += 1
    assert compared == len(SUBSET) * len(KINDS)
