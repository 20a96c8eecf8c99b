"""Code understanding as instruction-prompted YES/NO classification (the Astraios evaluation):
clone detection and defect detection, zero- or one-shot.

Offline data (seeded, balanced):
- defect-detection: HumanEval canonical solutions (NO) and their test-verified mutation bugs
  from humanevalfix-python-mutants (YES), both re-printed by `ast.unparse` without docstrings so the
  layout gives nothing away.
- clone-detection: HumanEval solutions and 150 functions of stdlib-instruct's test split,
  each paired with a semantics-preserving rewrite of itself (identifiers renamed
  consistently, `for` loops turned into `while` loops, re-printed) as a clone (YES), and with
  a different function of similar length from the same source as a non-clone (NO). There is
  one reference solution per problem offline, so "different solutions to the same problem"
  come only with BigCloneBench.
Real data: BigCloneBench and Devign in their CodeXGLUE schemas, from the hub or `--task-data`.
"""

from __future__ import annotations

import ast
import random
import re
from functools import cached_property
from pathlib import Path

from codepeft.data.records import read_file, read_hub
from codepeft.errors import CodepeftError
from codepeft.tasks.base import Prompt, Task, TaskKind
from codepeft.tasks.humaneval import without_docstrings
from codepeft.tasks.perturb import loops_to_while

CLONE_QUESTION = "Is there a clone relation between the two code fragments below? Respond YES or NO."
DEFECT_QUESTION = "Is there a defect in the code below? Respond YES or NO."
_WORD = re.compile(r"\b(yes|no)\b", re.I)


def parse_yes_no(text: str) -> str | None:
    """YES / NO from a free-text answer; None (invalid) when it says neither or both."""
    head = text.strip().split("\n\n")[0][:200]
    found = {m.lower() for m in _WORD.findall(head)}
    if len(found) != 1:
        return None
    return found.pop().upper()


def classification_scores(gold: list[str], predicted: list[str | None]) -> dict:
    """Accuracy, macro-F1 and valid-answer rate; accuracy and F1 also on valid answers only."""

    def acc_f1(pairs):
        if not pairs:
            return None, None
        accuracy = sum(g == p for g, p in pairs) / len(pairs)
        f1s = []
        for label in ("YES", "NO"):
            tp = sum(g == label and p == label for g, p in pairs)
            fp = sum(g != label and p == label for g, p in pairs)
            fn = sum(g == label and p != label for g, p in pairs)
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        return accuracy, sum(f1s) / 2

    pairs = list(zip(gold, predicted, strict=True))
    valid = [(g, p) for g, p in pairs if p is not None]
    accuracy, f1 = acc_f1(pairs)
    accuracy_valid, f1_valid = acc_f1(valid)
    return {
        "accuracy": {"value": accuracy, "examples": len(pairs)},
        "macro_f1": {"value": f1, "examples": len(pairs)},
        "valid_rate": {"value": len(valid) / len(pairs) if pairs else 0.0, "examples": len(pairs)},
        "accuracy_valid": {"value": accuracy_valid, "examples": len(valid)},
        "macro_f1_valid": {"value": f1_valid, "examples": len(valid)},
    }


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping):
        self.mapping = mapping

    def visit_Name(self, node):
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.mapping.get(node.arg, node.arg)
        return node


def rename_identifiers(code: str, seed: int) -> str:
    """Rename every argument and local variable consistently (a semantics-preserving rewrite)."""
    tree = ast.parse(code)
    names = sorted(
        {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
        | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    )
    rng = random.Random(seed)
    mapping = {name: f"v{rng.randrange(10**6)}_{i}" for i, name in enumerate(names)}
    return ast.unparse(_Renamer(mapping).visit(tree))


def _humaneval_functions() -> list[tuple[str, str]]:
    from codepeft.tasks.humaneval import humaneval_problems

    return [(p["task_id"], without_docstrings(p["prompt"] + p["canonical_solution"])) for p in humaneval_problems()]


def offline_defects(seed: int = 0) -> list[dict]:
    from codepeft.tasks.humanevalfix import shipped_bugs

    bugs = shipped_bugs()
    rows = []
    for task_id, code in _humaneval_functions():
        if task_id in bugs:
            rows.append({"id": f"{task_id}/ok", "code": code, "label": "NO"})
            rows.append(
                {"id": f"{task_id}/bug", "code": without_docstrings(bugs[task_id]["buggy_solution"]), "label": "YES"}
            )
    random.Random(seed).shuffle(rows)
    return rows


def _stdlib_functions(count: int, seed: int) -> list[tuple[str, str]]:
    from codepeft.config import DatasetSpec
    from codepeft.data import load_examples

    out = []
    for i, ex in enumerate(load_examples(DatasetSpec(source="stdlib-instruct", split="test"), "test")):
        try:
            out.append((f"stdlib/{ex['module']}/{i}", without_docstrings(ex["instruction"] + ex["output"])))
        except SyntaxError:
            continue
    random.Random(seed).shuffle(out)
    return out[:count]


def rewrite(code: str, seed: int) -> str:
    """A semantics-preserving rewrite: identifiers renamed, a for loop made a while loop, re-printed."""
    tree = ast.parse(rename_identifiers(code, seed))
    loops_to_while(tree, random.Random(seed))
    return ast.unparse(tree)


def offline_clones(seed: int = 0, stdlib_count: int = 150) -> list[dict]:
    """Clones: each function vs its rewrite; non-clones: vs one of the three closest in length
    from the same source (HumanEval solutions, or functions of stdlib-instruct's test split)."""
    rng = random.Random(seed)
    rows = []
    for pool in (_humaneval_functions(), _stdlib_functions(stdlib_count, seed)):
        for i, (fid, code) in enumerate(pool):
            rows.append({"id": f"{fid}/clone", "code1": code, "code2": rewrite(code, seed + i), "label": "YES"})
            others = sorted((abs(len(c) - len(code)), t, c) for t, c in pool if t != fid)
            _, other_id, other = others[rng.randrange(3)]
            rows.append({"id": f"{fid}/vs/{other_id}", "code1": code, "code2": other, "label": "NO"})
    rng.shuffle(rows)
    return rows


def _bigclonebench(rec: dict) -> dict:
    return {
        "id": f"{rec['id1']}-{rec['id2']}",
        "code1": rec["func1"],
        "code2": rec["func2"],
        "label": "YES" if rec["label"] in (True, 1, "1", "true", "True") else "NO",
    }


def _devign(rec: dict) -> dict:
    return {
        "id": str(rec.get("id", rec.get("commit_id"))),
        "code": rec["func"],
        "label": "YES" if rec["target"] in (True, 1, "1") else "NO",
    }


class ClassificationTask(Task):
    def __init__(self, kind: str, shots: int = 0, data_files: str | None = None, hub: bool = False):
        if kind not in ("clone", "defect"):
            raise CodepeftError(f"unknown classification kind {kind!r}")
        source = {"clone": "BigCloneBench (CodeXGLUE)", "defect": "Devign (CodeXGLUE)"}[kind]
        suffix = "" if shots == 0 else f"-{shots}shot"
        name = f"{kind}-detection{'-' + ('bigclonebench' if kind == 'clone' else 'devign') if hub else ''}{suffix}"
        super().__init__(
            name=name,
            description=f"{kind} detection, YES/NO, {shots}-shot",
            metrics=("accuracy", "macro_f1", "valid_rate"),
            source=f"{source} from the hub or --task-data" if hub else "offline: HumanEval (seeded, balanced)",
            kind=TaskKind.CLASSIFICATION,
            stop=["\n\n"],
        )
        self.detect, self.shots, self.data_files, self.hub = kind, shots, data_files, hub or data_files is not None

    @cached_property
    def _rows(self) -> list[dict]:
        if not self.hub:
            return offline_clones() if self.detect == "clone" else offline_defects()
        convert = _bigclonebench if self.detect == "clone" else _devign
        hub_id = (
            "code_x_glue_cc_clone_detection_big_clone_bench"
            if self.detect == "clone"
            else "code_x_glue_cc_defect_detection"
        )
        raw = read_file(Path(self.data_files)) if self.data_files else read_hub(hub_id, "test")
        rows = []
        for where, rec in raw:
            try:
                rows.append(convert(rec))
            except KeyError as err:
                raise CodepeftError(f"{where}: missing field {err.args[0]!r} of the CodeXGLUE schema") from None
        return rows

    @cached_property
    def examples(self) -> list[dict]:
        """The solved examples of a few-shot prompt: the first row of each label, in turn."""
        return [next(r for r in self._rows if r["label"] == lab) for lab in ("YES", "NO")][: self.shots]

    def problems(self):
        used = {r["id"] for r in self.examples}  # an example is never also a question
        return [{"task_id": r["id"], **r} for r in self._rows if r["id"] not in used]

    def _body(self, row: dict) -> str:
        if self.detect == "clone":
            return f"Code 1:\n{row['code1']}\n\nCode 2:\n{row['code2']}"
        return row["code"]

    def prompt(self, problem):
        question = CLONE_QUESTION if self.detect == "clone" else DEFECT_QUESTION
        shots = "".join(f"{question}\n\n{self._body(e)}\n\nAnswer: {e['label']}\n\n" for e in self.examples)
        instruction = f"{shots}{question}\n\n{self._body(problem)}"
        return Prompt(instruction=instruction, answer_prefix="", plain=f"{instruction}\n\nAnswer:", code_answer=False)

    def samples(self, settings):
        return 1  # one answer per question

    def score(self, problems, completions, ks=None, pool=None):
        return score_classification(problems, completions)


def score_classification(problems: list[dict], completions: list[list[str]]) -> dict:
    predicted = [parse_yes_no(c[0]) if c else None for c in completions]
    records = [
        {"task_id": p["task_id"], "label": p["label"], "answer": c[0] if c else "", "parsed": y}
        for p, c, y in zip(problems, completions, predicted, strict=True)
    ]
    return {"scores": classification_scores([p["label"] for p in problems], predicted), "problems": records}
