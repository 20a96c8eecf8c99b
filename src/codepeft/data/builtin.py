"""Built-in datasets: the offline `stdlib-instruct` and loaders for the two studies' datasets.

Each study loader reads the dataset's real hub schema (or a local copy of it passed as
`data_files`) and converts records to instruction/input/output.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codepeft.data import stdlib_instruct
from codepeft.data.records import read_file, read_hub
from codepeft.data.shipped import read_shipped
from codepeft.errors import CodepeftError


@dataclass
class BuiltinDataset:
    name: str
    description: str
    hub_id: str | None
    convert: Callable[[dict[str, Any]], dict[str, str] | None]  # None drops the record
    subset: str | None = None
    hub_splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})
    offline: Callable[[str], list[dict]] | None = None
    code_language: str | None = None  # every answer is code in this language (chat answers in a code block)

    def records(self, split: str, data_files: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
        if data_files:
            raw = read_file(Path(data_files))
        elif self.offline is not None:
            raw = ((f"{self.name}[{split}] row {i}", r) for i, r in enumerate(self.offline(split)))
        else:
            if split not in self.hub_splits:
                return
            raw = read_hub(self.hub_id, self.hub_splits[split], self.subset)
        for where, rec in raw:
            try:
                out = self.convert(rec)
            except KeyError as err:
                raise CodepeftError(
                    f"{where}: missing field {err.args[0]!r} of the {self.name} schema; the record has fields "
                    f"{sorted(rec)}"
                ) from None
            if out is not None:
                if self.code_language:
                    out.setdefault("language", self.code_language)
                yield where, out

    @property
    def origin(self) -> str:
        """Where the records come from by default."""
        if self.offline is None:
            return f"hub: {self.hub_id}"
        if self.offline is stdlib_instruct.load_split:
            return "mined from the Python standard library"
        return "shipped with codepeft" + (f" (hub copy: {self.hub_id})" if self.hub_id else "")

    def has_split(self, split: str, data_files: str | None) -> bool:
        return data_files is None and (self.offline is not None or split in self.hub_splits)


def _stdlib(rec):
    return {
        "instruction": rec["instruction"],
        "input": rec["input"],
        "output": rec["output"],
        "module": rec["module"],
    }


def _body_lines(rec) -> int:
    return sum(1 for line in rec["output"].splitlines() if line.strip())


def _stdlib_oneliner(rec):
    return _stdlib(rec) if _body_lines(rec) == 1 else None


def _stdlib_multiline(rec):
    return _stdlib(rec) if _body_lines(rec) > 1 else None


def _prompt_completion(rec):
    return {"instruction": rec["prompt"], "input": "", "output": rec["completion"]}


def _conala(rec):
    if "nl" in rec or "cmd" in rec:  # the DocPrompting split (shipped, and neulab/docprompting-conala)
        return {"instruction": rec["nl"], "input": "", "output": rec["cmd"]}
    intent = rec.get("rewritten_intent") or rec["intent"]  # CoNaLa curated (neulab/conala)
    return {"instruction": intent, "input": "", "output": rec["snippet"]}


def _shipped_conala(split: str) -> list[dict]:
    """CoNaLa in the DocPrompting split (2,135 / 201 / 543), as the PEFT-for-code study used it."""
    names = {"train": "train", "valid": "dev", "test": "test"}
    return list(read_shipped(f"conala-docprompting/{names[split]}.json.gz")) if split in names else []


def _shipped_oasst_commitpackft(split: str) -> list[dict]:
    """OctoPack's OASST + CommitPackFT instruction files (151 + 1,178). Like the hub's
    guanaco-commits (train / test), one in twenty pairs is held out as `test`, chosen by a hash of
    its text so the split never depends on order or on the machine; the rest is `train`."""
    if split not in ("train", "test"):
        return []
    rows = [
        *read_shipped("octopack/oasstcommitpackft.jsonl.gz"),
        *read_shipped("octopack/oasstcommitpackftmanual.jsonl.gz"),
    ]
    return [r for r in rows if _held_out(r) == (split == "test")]


def _held_out(row: dict) -> bool:
    text = json.dumps([row.get("prompt"), row.get("completion")], ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()[0] % 20 == 0


def _is_python(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return bool(code.strip())


def _codealpaca_py(rec):
    # Weyssow et al. keep the Python subset of CodeAlpaca; we keep outputs that parse as Python
    # and whose instruction names no other language.
    text = (rec["instruction"] + " " + rec.get("input", "")).lower()
    others = ("javascript", "java ", "c++", "c#", "sql", "html", "css", "ruby", "php", "swift", "bash", "go ")
    if any(o in text for o in others) or not _is_python(rec["output"]):
        return None
    return {"instruction": rec["instruction"], "input": rec.get("input") or "", "output": rec["output"]}


def _apps(rec):
    solutions = rec["solutions"]
    solutions = json.loads(solutions) if isinstance(solutions, str) and solutions else solutions
    if not solutions:
        return None
    starter = rec.get("starter_code") or ""
    return {"instruction": rec["question"], "input": starter, "output": solutions[0]}


def _mbpp(rec):
    tests = "\n".join(rec["test_list"])
    return {
        "instruction": f"{rec['text']}\nYour code should pass these tests:\n{tests}",
        "input": "",
        "output": rec["code"],
    }


BUILTINS: dict[str, BuiltinDataset] = {
    d.name: d
    for d in [
        BuiltinDataset(
            "stdlib-instruct",
            "docstring -> function body pairs mined from the Python standard library (offline)",
            None,
            _stdlib,
            code_language="python",
            offline=stdlib_instruct.load_split,
        ),
        # Two disjoint parts of stdlib-instruct, the offline stand-ins for a CoNaLa-like (one-line
        # answers) and a CodeAlpaca-like (longer answers) dataset in joint-vs-separate studies.
        BuiltinDataset(
            "stdlib-oneliners",
            "stdlib-instruct pairs whose body is one line (offline)",
            None,
            _stdlib_oneliner,
            code_language="python",
            offline=stdlib_instruct.load_split,
        ),
        BuiltinDataset(
            "stdlib-multiline",
            "stdlib-instruct pairs whose body has several lines (offline)",
            None,
            _stdlib_multiline,
            code_language="python",
            offline=stdlib_instruct.load_split,
        ),
        BuiltinDataset(
            "guanaco-commits",
            "CommitPackFT + OASST, the Astraios training set (prompt/completion)",
            "bigcode/guanaco-commits",
            _prompt_completion,
        ),
        BuiltinDataset(
            "conala",
            "CoNaLa, DocPrompting split: intent (nl) -> one-line snippet (cmd), shipped",
            "neulab/docprompting-conala",
            _conala,
            code_language="python",
            hub_splits={"train": "train", "valid": "validation", "test": "test"},
            offline=_shipped_conala,
        ),
        BuiltinDataset(
            "conala-curated",
            "CoNaLa curated: intent -> one-line snippet (hub)",
            "neulab/conala",
            _conala,
            code_language="python",
            subset="curated",
        ),
        BuiltinDataset(
            "oasst-commitpackft",
            "OASST + CommitPackFT instructions from OctoPack (151 + 1,178), shipped; prompt/completion",
            None,
            _prompt_completion,
            offline=_shipped_oasst_commitpackft,
        ),
        BuiltinDataset(
            "codealpaca-py",
            "CodeAlpaca-20k, Python subset",
            "sahil2801/CodeAlpaca-20k",
            _codealpaca_py,
            code_language="python",
            hub_splits={"train": "train"},
        ),
        BuiltinDataset(
            "apps",
            "APPS programming problems (first reference solution)",
            "codeparrot/apps",
            _apps,
            code_language="python",
        ),
        BuiltinDataset(
            "mbpp",
            "MBPP: basic Python problems with tests",
            "google-research-datasets/mbpp",
            _mbpp,
            code_language="python",
            subset="full",
            hub_splits={"train": "train", "valid": "validation", "test": "test"},
        ),
    ]
}


def get_builtin(name: str) -> BuiltinDataset | None:
    return BUILTINS.get(name)
