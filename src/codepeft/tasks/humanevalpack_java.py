"""HumanEvalPack Java: synthesize and fix, scored with javac / java in the sandbox.

The data comes from the hub (`bigcode/humanevalpack`, subset `java`) or a local copy in the
same schema (`--task-data humanevalsynthesize-java=FILE.jsonl`).
"""

from __future__ import annotations

from pathlib import Path

from codepeft.data.records import read_file, read_hub
from codepeft.errors import CodepeftError
from codepeft.tasks.base import Prompt, Task

JAVA_STOP = ["\npublic class Main", "\nclass Main", "\n/**", "```"]
FIELDS = (
    "task_id",
    "prompt",
    "declaration",
    "canonical_solution",
    "buggy_solution",
    "test",
    "entry_point",
    "instruction",
)


def close_braces(code: str) -> str:
    """Close what the completion left open (it stops before the class ends)."""
    missing = code.count("{") - code.count("}")
    return code + "\n" + "}\n" * max(missing, 0)


class HumanEvalPackJava(Task):
    def __init__(self, mode: str, data_files: str | None = None):
        super().__init__(
            name=f"humaneval{mode}-java",
            description=f"HumanEvalPack Java {mode}: javac + java in the sandbox",
            metrics=("pass@k",),
            source="bigcode/humanevalpack [java] (hub) or --task-data FILE",
            language="java",
            stop=list(JAVA_STOP),
        )
        self.mode, self.data_files = mode, data_files

    def problems(self):
        raw = read_file(Path(self.data_files)) if self.data_files else read_hub("bigcode/humanevalpack", "test", "java")
        problems = []
        for where, rec in raw:
            missing = [f for f in FIELDS if f not in rec and not (f == "buggy_solution" and self.mode == "synthesize")]
            if missing:
                raise CodepeftError(f"{where}: missing HumanEvalPack field(s) {missing}")
            problems.append(rec)
        return problems

    def prompt(self, problem):
        if self.mode == "synthesize":
            return Prompt(instruction=problem["instruction"], answer_prefix=problem["prompt"])
        context = f"{problem['declaration']}{problem['buggy_solution']}\n{problem['test']}"
        return Prompt(
            instruction=f"{context}\nFix bugs in {problem['entry_point']}.",
            answer_prefix=problem["declaration"],
            plain=f"{context}\n// Fix bugs in {problem['entry_point']}.\n{problem['declaration']}",
        )

    def program(self, problem, completion):
        return close_braces(completion) + "\n" + problem["test"]
