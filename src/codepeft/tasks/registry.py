"""One registry of tasks: name -> task. `<builtin dataset>-loss` names a loss task for any dataset."""

from __future__ import annotations

from collections.abc import Callable

from codepeft.errors import CodepeftError
from codepeft.tasks.base import Task
from codepeft.tasks.humaneval import HumanEval
from codepeft.tasks.humanevalexplain import HumanEvalExplain
from codepeft.tasks.humanevalfix import HumanEvalFix
from codepeft.tasks.loss import LossTask
from codepeft.tasks.match import MatchTask

TASKS: dict[str, Callable[[], Task]] = {
    "humaneval": HumanEval,
    "humanevalfix-python": HumanEvalFix,
    "humanevalexplain-python": HumanEvalExplain,
    "stdlib-instruct": lambda: MatchTask("stdlib-instruct"),
    "conala": lambda: MatchTask("conala"),
    "codealpaca-py": lambda: MatchTask("codealpaca-py"),
    "stdlib-instruct-loss": lambda: LossTask("stdlib-instruct"),
}


def get_task(name: str) -> Task:
    from codepeft.data import BUILTINS

    if name in TASKS:
        return TASKS[name]()
    if name.endswith("-loss") and name[: -len("-loss")] in BUILTINS:
        return LossTask(name[: -len("-loss")])
    known = sorted(TASKS) + [f"{d}-loss" for d in BUILTINS if f"{d}-loss" not in TASKS]
    raise CodepeftError(f"unknown task {name!r}; known tasks: {', '.join(known)}")


def all_tasks() -> list[Task]:
    return [factory() for factory in TASKS.values()]
