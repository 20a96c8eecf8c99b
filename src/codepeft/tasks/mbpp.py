"""MBPP in HumanEval format (ReCode's release of the 974 problems, shipped): the standard test
split (task ids 11-510) with the usual 3-shot prompt built from ids 2-4.

Each problem is a function signature whose docstring holds the task text and its example calls;
the tests are the original three asserts, as a HumanEval `check(candidate)`. In the completion
format (`plain`) the three solved examples come first; the instruction formats state the task
(the docstring) and the model writes the body, zero-shot (a prompting baseline adds examples).
"""

from __future__ import annotations

import ast
import functools
import re

from codepeft.data.shipped import read_shipped
from codepeft.tasks.base import Prompt, Task
from codepeft.tasks.humaneval import split_prompt, test_program

SHIPPED = "recode/nominal/mbpp_wtest.jsonl.gz"
TEST_IDS = range(11, 511)
SHOT_IDS = (2, 3, 4)


@functools.cache
def _by_id() -> dict[int, dict]:
    return {int(rec["task_id"].split("/")[1]): _repaired(dict(rec)) for rec in read_shipped(SHIPPED)}


def _repaired(problem: dict) -> dict:
    """The release has one prompt whose docstring is not indented (MBPP/64), which no completion
    can fix: it gets the indentation of the reference solution's body."""
    try:
        ast.parse(problem["prompt"])
        return problem
    except SyntaxError:
        pass
    indent = re.search(r"^([ \t]+)\S", problem["canonical_solution"], re.M)
    head, _, doc = problem["prompt"].partition("):\n")
    fixed = head + "):\n" + "".join(f"{indent.group(1) if indent else '    '}{line}" for line in doc.splitlines(True))
    return {**problem, "prompt": fixed}


def mbpp_test_problems() -> list[dict]:
    """The 500 problems of MBPP's test split, in HumanEval format."""
    problems = _by_id()
    return [problems[i] for i in TEST_IDS]


def few_shot_prefix() -> str:
    """Problems 2-4 with their reference solutions, each followed by a blank line."""
    problems = _by_id()
    return "".join(
        f"{problems[i]['prompt'].strip(chr(10))}\n{problems[i]['canonical_solution'].rstrip()}\n\n\n" for i in SHOT_IDS
    )


class Mbpp(Task):
    def __init__(self):
        super().__init__(
            name="mbpp",
            description="MBPP test split (ids 11-510): write the function from its task text and examples",
            metrics=("pass@k",),
            source="MBPP in HumanEval format from ReCode's release (974 problems, Apache-2.0), shipped",
        )

    def problems(self):
        return mbpp_test_problems()

    def prompt(self, problem):
        _, doc, signature = split_prompt(problem)
        code = problem["prompt"].lstrip("\n")
        return Prompt(
            instruction=f"Write a Python function `{signature}` to solve the following problem:\n{doc}",
            answer_prefix=code,
            plain=few_shot_prefix() + code,
        )

    def program(self, problem, code):
        return test_program(problem, code)
