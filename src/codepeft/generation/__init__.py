"""Batched generation behind one interface: Hugging Face `generate` everywhere, vLLM on a GPU."""

from codepeft.generation.backends import GenerationSettings, HFBackend, make_backend, truncate_at_stop

__all__ = ["GenerationSettings", "HFBackend", "make_backend", "truncate_at_stop"]
