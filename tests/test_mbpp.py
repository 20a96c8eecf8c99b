"""MBPP on ReCode's release of it in HumanEval format: the standard test split, the usual 3-shot
prompt, and the reference solutions passing every problem the release does not break."""

from __future__ import annotations

from codepeft.execution import SandboxPool
from codepeft.tasks import get_task, render_prompt
from codepeft.tasks.scoring import score_execution

# broken as released: the test of 160 had `solution` replaced by `candidate` inside a string,
# 341 compares a tuple made from a set with a fixed order, 367's tests use trees they never build
BROKEN_IN_RELEASE = {"MBPP/160", "MBPP/341", "MBPP/367"}


def test_the_test_split_is_ids_11_to_510_with_three_shots_from_2_to_4():
    task = get_task("mbpp")
    problems = task.problems()
    assert [p["task_id"] for p in problems] == [f"MBPP/{i}" for i in range(11, 511)]
    prompt = task.prompt(problems[0])
    plain = render_prompt(prompt, "plain")
    shots = ["def similar_elements(", "def is_not_prime(", "def heap_queue_largest("]
    assert [plain.index(s) for s in shots] == sorted(plain.index(s) for s in shots)
    assert plain.endswith(problems[0]["prompt"].lstrip("\n")) and plain.count('"""') == 8
    # the instruction formats carry the task text, zero-shot
    instruct = render_prompt(prompt, "instruct")
    assert "similar_elements" not in instruct and "remove_Occ" in instruct


def test_references_pass_all_but_the_three_broken_problems_and_empty_completions_none():
    task = get_task("mbpp")
    problems = task.problems()
    pool = SandboxPool(workers=2)
    result = score_execution(task, problems, [[p["canonical_solution"]] for p in problems], [1], pool)
    failed = {r["task_id"] for r in result["problems"] if not r["passed"]}
    assert failed == BROKEN_IN_RELEASE
    result = score_execution(task, problems, [[""] for _ in problems], [1], pool)
    assert not any(r["passed"] for r in result["problems"])


def test_a_function_called_check_is_not_shadowed_by_the_tests():
    task = get_task("mbpp")
    problem = next(p for p in task.problems() if p["task_id"] == "MBPP/56")
    assert problem["entry_point"] == "check"
    program = task.program(problem, task.code_of(problem, problem["canonical_solution"]))
    assert program.rstrip().endswith("check(_codepeft_candidate)")
