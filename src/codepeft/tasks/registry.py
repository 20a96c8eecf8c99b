"""One registry of tasks: name -> task. `<builtin dataset>-loss` names a loss task for any dataset."""

from __future__ import annotations

from collections.abc import Callable

from codepeft.errors import CodepeftError, did_you_mean
from codepeft.tasks.base import Task
from codepeft.tasks.humaneval import HumanEval
from codepeft.tasks.humanevalexplain import HumanEvalExplain
from codepeft.tasks.humanevalfix import HumanEvalFix
from codepeft.tasks.humanevalpack_java import HumanEvalPackJava
from codepeft.tasks.loss import LossTask
from codepeft.tasks.match import MatchTask
from codepeft.tasks.recode import ReCode
from codepeft.tasks.security import Security
from codepeft.tasks.understanding import ClassificationTask

TASKS: dict[str, Callable[[], Task]] = {
    "humaneval": HumanEval,
    "humanevalfix-python": HumanEvalFix,
    "humanevalexplain-python": HumanEvalExplain,
    "humanevalsynthesize-java": lambda: HumanEvalPackJava("synthesize"),
    "humanevalfix-java": lambda: HumanEvalPackJava("fix"),
    "stdlib-instruct": lambda: MatchTask("stdlib-instruct"),
    "stdlib-oneliners": lambda: MatchTask("stdlib-oneliners"),
    "stdlib-multiline": lambda: MatchTask("stdlib-multiline"),
    "conala": lambda: MatchTask("conala"),
    "codealpaca-py": lambda: MatchTask("codealpaca-py"),
    "stdlib-instruct-loss": lambda: LossTask("stdlib-instruct"),
    "security-python": Security,
    "recode-docstring": lambda: ReCode("docstring"),
    "recode-function": lambda: ReCode("function"),
    "recode-syntax": lambda: ReCode("syntax"),
    "recode-format": lambda: ReCode("format"),
    "clone-detection": lambda: ClassificationTask("clone"),
    "clone-detection-1shot": lambda: ClassificationTask("clone", shots=1),
    "defect-detection": lambda: ClassificationTask("defect"),
    "defect-detection-1shot": lambda: ClassificationTask("defect", shots=1),
    "clone-detection-bigclonebench": lambda: ClassificationTask("clone", hub=True),
    "defect-detection-devign": lambda: ClassificationTask("defect", hub=True),
}


# Tasks whose data can come from a local file in the hub schema (--task-data NAME=FILE).
WITH_DATA_FILES = {
    "humanevalsynthesize-java": lambda f: HumanEvalPackJava("synthesize", f),
    "humanevalfix-java": lambda f: HumanEvalPackJava("fix", f),
    "conala": lambda f: MatchTask("conala", data_files=f),
    "codealpaca-py": lambda f: MatchTask("codealpaca-py", data_files=f),
    "clone-detection-bigclonebench": lambda f: ClassificationTask("clone", data_files=f),
    "defect-detection-devign": lambda f: ClassificationTask("defect", data_files=f),
}


def get_task(name: str, data_files: str | None = None) -> Task:
    from codepeft.data import BUILTINS

    if data_files is not None:
        if name not in WITH_DATA_FILES:
            raise CodepeftError(f"task {name!r} takes no data file; these do: {', '.join(WITH_DATA_FILES)}")
        return WITH_DATA_FILES[name](data_files)
    if name in TASKS:
        return TASKS[name]()
    if name.endswith("-loss") and name[: -len("-loss")] in BUILTINS:
        return LossTask(name[: -len("-loss")])
    known = sorted(TASKS) + [f"{d}-loss" for d in BUILTINS if f"{d}-loss" not in TASKS]
    raise CodepeftError(f"unknown task {name!r}{did_you_mean(name, known)}; known tasks: {', '.join(known)}")


def all_tasks() -> list[Task]:
    return [factory() for factory in TASKS.values()]
