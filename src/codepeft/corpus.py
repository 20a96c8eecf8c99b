"""The offline code corpus: the Python standard library's own source files.

One split function decides which modules are held out, and both the pre-training of the
default model and the `stdlib-instruct` dataset use it, so the instruction test split is
made of modules the default model never saw during pre-training.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Test suites and vendored/demo code are not representative library code.
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "turtledemo"}
HELD_OUT_PERCENT = {"valid": 5, "test": 5}


@dataclass(frozen=True)
class SourceFile:
    module: str
    path: Path

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[SourceFile]:
    """All standard-library .py files outside test suites, sorted by module name."""
    root = root or stdlib_root()
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts) or rel.parts[0].startswith("test"):
            continue
        module = ".".join(rel.with_suffix("").parts)
        files.append(SourceFile(module, path))
    return sorted(files, key=lambda f: f.module)


def split_of(module: str) -> str:
    """Stable train/valid/test assignment by top-level package, so a package never straddles splits."""
    top = module.split(".")[0]
    bucket = int(hashlib.sha1(top.encode()).hexdigest(), 16) % 100
    if bucket < HELD_OUT_PERCENT["test"]:
        return "test"
    if bucket < HELD_OUT_PERCENT["test"] + HELD_OUT_PERCENT["valid"]:
        return "valid"
    return "train"
