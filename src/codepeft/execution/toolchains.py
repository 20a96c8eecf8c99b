"""Libraries a language's tests build against (Go's testify, Rust's rand / regex / md5),
prepared once per machine and toolchain version, then linked into each program's directory.

The preparation is a trusted build of Debian-packaged sources (never generated code). It lives
in the codepeft cache; each program gets hard links (copies across file systems) inside its
own working directory, so the sandbox needs no extra path and the prepared files are never
handed to a program writable.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from codepeft.errors import CodepeftError


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(prepared: Path, dest: Path) -> None:
    """`prepared` appears at `dest` (a new directory), file by file as hard links."""
    shutil.copytree(prepared, dest, copy_function=_link_or_copy)


@functools.cache
def prepared(name: str, build: Callable[[Path], None]) -> Path:
    """The directory `build(dir)` fills, built once (under a file lock, so parallel processes
    build it once too) at `<cache>/toolchains/<name>`; `name` carries the toolchain version."""
    from codepeft.paths import cache_dir  # here: codepeft.execution imports nothing else of codepeft

    root = cache_dir() / "toolchains" / name
    done = root / ".complete"
    if done.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return root
        staging = root.with_name(f"{name}.building")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        staging.mkdir()
        build(staging)
        for path in [staging, *staging.rglob("*")]:  # linked files: readable by the sandbox's user only
            path.chmod(0o755 if path.is_dir() else 0o444)
        (staging / ".complete").touch()
        staging.rename(root)
    return root


def run_build(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    """Run one trusted build step; its failure is one error naming what could not be prepared."""
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise CodepeftError(f"could not prepare {what}: {' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


@functools.cache
def tool_version(*argv: str) -> str:
    """A toolchain's version line, made safe for a directory name."""
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60).stdout.strip()
    line = out.splitlines()[0] if out else "unknown"
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in line)
