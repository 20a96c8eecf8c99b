"""HumanEvalFix (Python): repair a buggy function given its tests.

The bugs are made by mutation operators (`mutation.py`) on the canonical solutions and kept
only if the tests then fail in the sandbox; the set ships as `data/humanevalfix_python.jsonl`
and `build_bugs(seed)` rebuilds it. Unlike HumanEvalPack's hand-written bugs, these are
single-site, syntactic mutations (an operator, comparison, constant, boolean operator,
variable or statement), so some are easier to spot than a human's subtle logic slip; see
docs/tasks.md.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from codepeft.execution import SandboxPool
from codepeft.tasks.base import Prompt, Task
from codepeft.tasks.humaneval import humaneval_problems, split_prompt, test_program, without_docstrings
from codepeft.tasks.mutation import mutants

DATA = Path(__file__).parent / "data" / "humanevalfix_python.jsonl"
DEFAULT_SEED = 0


def build_bugs(seed: int = DEFAULT_SEED, problems: list[dict] | None = None, pool: SandboxPool | None = None):
    """One test-verified bug per problem where the operators find one (deterministic from seed)."""
    pool = pool or SandboxPool(workers=2)
    bugs = []
    for k, problem in enumerate(problems or humaneval_problems()):
        name = problem["entry_point"]
        correct = problem["prompt"] + problem["canonical_solution"]
        for op, mutated in mutants(correct, name, seed * 1000 + k):
            buggy = without_docstrings(mutated, name)
            result = pool.map([(test_program(problem, buggy), "python", None)])[0]
            if result.outcome.value in ("failed", "error"):
                bugs.append(
                    {
                        "task_id": problem["task_id"],
                        "operator": op,
                        "buggy_solution": buggy,
                        "failure": result.error_type,
                        "seed": seed,
                    }
                )
                break
    return bugs


@functools.cache
def shipped_bugs() -> dict[str, dict]:
    return {r["task_id"]: r for r in map(json.loads, DATA.read_text().splitlines())}


class HumanEvalFix(Task):
    def __init__(self):
        super().__init__(
            name="humanevalfix-python-mutants",
            description="repair a machine-made mutation bug of a HumanEval solution given its tests",
            metrics=("pass@k",),
            source=f"HumanEval + test-verified mutation bugs ({DATA.name}, seed {DEFAULT_SEED})",
        )

    def problems(self):
        bugs = shipped_bugs()
        return [
            {**p, "buggy_solution": bugs[p["task_id"]]["buggy_solution"]}
            for p in humaneval_problems()
            if p["task_id"] in bugs
        ]

    def prompt(self, problem):
        name = problem["entry_point"]
        declaration, _, _ = split_prompt(problem)
        context = f"{problem['buggy_solution']}\n\n{problem['test']}"
        instruction = f"{context}\nFix bugs in {name}."
        plain = f"{context}\n\n# Fix bugs in {name}.\n{declaration}"
        return Prompt(instruction=instruction, answer_prefix=declaration, plain=plain)

    def program(self, problem, completion):
        return test_program(problem, completion)
