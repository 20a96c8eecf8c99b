"""Batched generation behind one interface: Hugging Face `generate` everywhere, vLLM on a GPU."""

from codepeft.generation.backends import (
    GenerationBackend,
    GenerationSettings,
    HFBackend,
    make_backend,
    truncate_at_stop,
)

__all__ = ["GenerationBackend", "GenerationSettings", "HFBackend", "make_backend", "truncate_at_stop"]
