"""The offline default model: built deterministically, cached, and loadable as any HF model."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import load_file

from codepeft.models.bootstrap import BootstrapSpec, build, ensure_default_model, read_info

SHORT = BootstrapSpec(tokens=4096, eval_tokens=4096)  # 2 steps: the CI-sized version


def test_short_bootstrap_builds_caches_and_is_deterministic(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_default_model(SHORT, progress=False)
    info = read_info(path)
    assert info["steps"] == 2 and info["train_tokens"] == 4096
    assert info["heldout_tokens"] == 4096 and info["heldout_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "gpt_bigcode" and model.config.multi_query
    tok = AutoTokenizer.from_pretrained(path)
    code = "def f(x):\n    return x + 1\n"
    assert tok.decode(tok(code)["input_ids"]) == code  # byte-level BPE round-trips

    started = time.perf_counter()
    assert ensure_default_model(SHORT, progress=False) == path
    assert time.perf_counter() - started < 1.0  # cached: instant the second time

    again = tmp_path / "again"
    build(SHORT, again, progress=False)
    first, second = load_file(str(path / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same weights


def test_default_name_resolves_to_the_cached_model(monkeypatch):
    from codepeft.models.loading import resolve_name

    monkeypatch.setenv("CODEPEFT_BOOTSTRAP_TOKENS", "4096")
    monkeypatch.setattr("codepeft.models.bootstrap.default_spec", lambda: SHORT)
    assert resolve_name("default") == str(ensure_default_model(SHORT, progress=False))


@pytest.mark.slow
def test_full_budget_bootstrap_learns():
    path = ensure_default_model(BootstrapSpec(), progress=False)
    info = read_info(path)
    # far below the uniform-guess loss ln(8192) = 9.01 on packages it never saw
    assert info["heldout_loss"] < 6.0
