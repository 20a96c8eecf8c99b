"""`stdlib-instruct`: docstring -> function-body pairs mined from the Python standard library.

instruction = the function's signature and docstring (as code), response = its body.
De-duplicated on the body, split by module with `corpus.split_of`, so valid/test functions
come from packages the offline default model never saw in pre-training.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import textwrap
from pathlib import Path

from codepeft.corpus import split_of, stdlib_files
from codepeft.paths import cache_dir

VERSION = 1
MIN_DOC_CHARS, MAX_BODY_LINES, MAX_BODY_CHARS = 16, 40, 1500


def _function_pairs(source: str, module: str):
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=False)
        body = node.body[1:] if doc is not None else []
        if doc is None or len(doc.strip()) < MIN_DOC_CHARS or not body:
            continue
        if all(isinstance(s, ast.Pass | ast.Raise) or _is_ellipsis(s) for s in body):
            continue  # abstract stubs teach nothing
        start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        header_end = node.body[0].end_lineno  # end of the docstring statement
        header = textwrap.dedent("".join(lines[start:header_end]))
        full = textwrap.dedent("".join(lines[start : node.end_lineno]))
        body_text = full[len(header) :] if full.startswith(header) else None
        if not body_text or not body_text.strip():
            continue
        n_lines = body_text.count("\n")
        if n_lines > MAX_BODY_LINES or len(body_text) > MAX_BODY_CHARS:
            continue
        yield {
            "instruction": header,
            "input": "",
            "output": body_text.rstrip() + "\n",
            "module": module,
            "name": node.name,
            "line": node.lineno,
        }


def _is_ellipsis(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis


def mine() -> dict[str, list[dict]]:
    """Mine all splits from the running interpreter's standard library (deterministic)."""
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    seen: set[str] = set()
    for f in stdlib_files():
        for rec in _function_pairs(f.read(), f.module):
            key = hashlib.sha1(" ".join(rec["output"].split()).encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            splits[split_of(f.module)].append(rec)
    return splits


def _cache_path() -> Path:
    return cache_dir() / "datasets" / f"stdlib-instruct-v{VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"


def load_split(split: str) -> list[dict]:
    """Records of one split, mined once and cached as JSONL."""
    root = _cache_path()
    path = root / f"{split}.jsonl"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        for name, records in mine().items():
            tmp = root / f"{name}.jsonl.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
            tmp.replace(root / f"{name}.jsonl")
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
