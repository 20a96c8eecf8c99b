"""The public benchmark and training files that ship inside the package (`data/shipped/`).

Each file is an unedited, gzip-compressed copy of its source (SOURCES.md beside the files names
repository, commit, path and licence); MANIFEST.json records the SHA-256 and the record count of
every file, so a damaged or partial install is named instead of scoring wrong. The files are
package data: they install with the wheel and are read in place from an editable install.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path

from codepeft.errors import CodepeftError

MANIFEST = "MANIFEST.json"


def shipped_root() -> Path:
    return Path(str(resources.files("codepeft.data"))) / "shipped"


def shipped_path(relative: str) -> Path:
    """The path of a shipped file, e.g. `humanevalpack/java.jsonl.gz`."""
    path = shipped_root() / relative
    if not path.is_file():
        raise CodepeftError(
            f"shipped data file {relative} is missing from {shipped_root()} (a partial install?); reinstall codepeft"
        )
    return path


def count_records(path: Path) -> int:
    """Records in a .jsonl.gz (lines) or .json.gz (a list) file."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        if path.name.endswith(".jsonl.gz"):
            return sum(1 for line in fh if line.strip())
        return len(json.load(fh))


@functools.cache
def read_shipped(relative: str) -> tuple[dict, ...]:
    """The records of a shipped file, in file order (a tuple: callers copy what they change)."""
    path = shipped_path(relative)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        if path.name.endswith(".jsonl.gz"):
            return tuple(json.loads(line) for line in fh if line.strip())
        return tuple(json.load(fh))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest() -> dict[str, dict]:
    return json.loads((shipped_root() / MANIFEST).read_text())["files"]


def write_manifest() -> Path:
    """Record every data file's SHA-256 and record count (run after adding a file)."""
    root = shipped_root()
    files = {}
    for path in sorted(root.rglob("*.gz")):
        rel = path.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256(path), "records": count_records(path), "bytes": path.stat().st_size}
    out = root / MANIFEST
    out.write_text(json.dumps({"files": files}, indent=1) + "\n")
    return out


def verify() -> list[str]:
    """Problems with the shipped files: missing, changed, unlisted or a wrong record count."""
    root = shipped_root()
    listed = manifest()
    problems = []
    for rel, want in listed.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256(path) != want["sha256"]:
            problems.append(f"{rel}: SHA-256 differs from the manifest")
        elif count_records(path) != want["records"]:
            problems.append(f"{rel}: {count_records(path)} records, manifest says {want['records']}")
    for path in root.rglob("*.gz"):
        if path.relative_to(root).as_posix() not in listed:
            problems.append(f"{path.relative_to(root)}: not in the manifest")
    return problems
