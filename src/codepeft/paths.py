"""Where codepeft keeps what it builds once and reuses (default model, mined datasets)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """$CODEPEFT_CACHE, else the user cache directory (~/.cache/codepeft on Linux)."""
    return Path(os.environ.get("CODEPEFT_CACHE") or user_cache_dir("codepeft"))
