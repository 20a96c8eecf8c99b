"""Run a task end to end: prompts -> completions -> programs -> sandbox -> scores."""

from __future__ import annotations

from codepeft.execution import Limits, SandboxPool
from codepeft.metrics import pass_at_k_scores
from codepeft.tasks.base import Task


def score_execution(
    task: Task,
    problems: list[dict],
    completions: list[list[str]],
    ks: list[int],
    pool: SandboxPool,
    limits: Limits | None = None,
) -> dict:
    """Run every completion's program (`task.program(p, task.code_of(p, c))`) in the sandbox;
    pass@k over problems with a 95% CI."""
    jobs, index = [], []
    for i, (problem, samples) in enumerate(zip(problems, completions, strict=True)):
        for j, completion in enumerate(samples):
            jobs.append(
                (
                    task.program(problem, task.code_of(problem, completion)),
                    task.language,
                    limits or task.limits(problem),
                )
            )
            index.append((i, j))
    results = pool.map(jobs)
    records = [
        {"task_id": p["task_id"], "samples": [{"completion": c} for c in samples]}
        for p, samples in zip(problems, completions, strict=True)
    ]
    for (i, j), (program, _, _), result in zip(index, jobs, results, strict=True):
        sample = records[i]["samples"][j]
        sample.update(
            program=program,
            outcome=result.outcome.value,
            error_type=result.error_type,
            duration_s=round(result.duration_s, 3),
        )
    counts = [(len(r["samples"]), sum(s["outcome"] == "passed" for s in r["samples"])) for r in records]
    for r, (n, c) in zip(records, counts, strict=True):
        r.update(n=n, passed=c)
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
    return {
        "scores": pass_at_k_scores(counts, ks),
        "outcomes": outcomes,
        "isolation": pool.isolation,
        "problems": records,
    }
