"""Read raw records from files or the hub, and map them onto one instruction schema.

An example is either {"instruction", "input", "output"} or {"messages": [...]}. Records
that lack a needed field are refused with the file and line (or row) that holds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError, did_you_mean

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")

# Schemas recognised without a field mapping: our name -> the record's name.
_AUTO_SCHEMAS = [
    {"instruction": "instruction", "input": "input", "output": "output"},
    {"instruction": "prompt", "output": "completion"},
    {"instruction": "prompt", "output": "response"},
    {"instruction": "question", "output": "answer"},
]


def read_file(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, record) from a .jsonl, .json (a list) or .parquet file."""
    if not path.is_file():
        raise CodepeftError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CodepeftError(f"{path} line {i}: not valid JSON ({err.msg})") from None
                yield f"{path} line {i}", _as_record(rec, f"{path} line {i}")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CodepeftError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]} wrappers
        if not isinstance(data, list):
            raise CodepeftError(f"{path}: a .json dataset must be a list of records")
        for i, rec in enumerate(data):
            yield f"{path} record {i}", _as_record(rec, f"{path} record {i}")
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path} row {i}", rec
    else:
        raise CodepeftError(f"{path}: unsupported data file type; use one of {', '.join(FILE_SUFFIXES)}")


def read_hub(hub_id: str, split: str, subset: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    from codepeft.data.builtin import BUILTINS

    try:
        ds = datasets.load_dataset(hub_id, subset, split=split)
    except Exception as err:  # datasets raises many types for "not reachable / not found"
        hint = did_you_mean(hub_id, BUILTINS)
        built_in = f"not a built-in dataset{hint} nor a local file, and " if hint else ""
        raise CodepeftError(
            f"cannot load dataset {hub_id!r}: {built_in}the hub could not provide split {split!r} "
            f"({type(err).__name__}: {err}). "
            "Offline? Download it once, or point data.train[].source at local .jsonl/.parquet files."
        ) from None
    for i, rec in enumerate(ds):
        yield f"{hub_id}[{split}] row {i}", rec


def _as_record(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise CodepeftError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def normalize(rec: dict[str, Any], where: str, fields: dict[str, str] | None) -> dict[str, Any]:
    """Map a raw record onto our schema; `fields` maps our names to the record's names."""
    if fields:
        if "messages" in fields:
            return {"messages": _messages(_get(rec, fields["messages"], where, "messages"), where)}
        unknown = set(fields) - {"instruction", "input", "output"}
        if unknown:
            raise CodepeftError(
                f"data fields mapping has unknown target(s) {sorted(unknown)}; use instruction, input, output "
                "or messages"
            )
        out = {name: _get(rec, fields[name], where, name) for name in ("instruction", "output") if name in fields}
        missing = {"instruction", "output"} - set(out)
        if missing:
            raise CodepeftError(f"data fields mapping must name {sorted(missing)} (or messages)")
        out["input"] = _get(rec, fields["input"], where, "input") if "input" in fields else ""
        return _strings(out, where)
    if "messages" in rec:
        return {"messages": _messages(rec["messages"], where)}
    for schema in _AUTO_SCHEMAS:
        if all(v in rec for k, v in schema.items() if k != "input"):
            out = {k: rec.get(v, "") for k, v in schema.items()}
            out.setdefault("input", "")
            return _strings(out, where)
    raise CodepeftError(
        f"{where}: cannot tell the instruction and response fields; the record has fields "
        f"{sorted(rec)}. Set data.train[].fields, e.g. {{instruction: intent, output: snippet}}"
    )


def _get(rec: dict, key: str, where: str, role: str) -> Any:
    if key not in rec or rec[key] is None:
        raise CodepeftError(f"{where}: missing field {key!r} (used as {role}); the record has fields {sorted(rec)}")
    return rec[key]


def _strings(out: dict[str, Any], where: str) -> dict[str, str]:
    for k, v in out.items():
        if v is None:
            out[k] = ""
        elif not isinstance(v, str):
            raise CodepeftError(f"{where}: field for {k} must be text, got {type(v).__name__}")
    return out


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise CodepeftError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise CodepeftError(f"{where}: message {i} needs 'role' and 'content'")
    if value[-1]["role"] != "assistant":
        raise CodepeftError(f"{where}: the last message must be the assistant's answer (the training target)")
    return [{"role": m["role"], "content": m["content"]} for m in value]
