"""Generation's oneDNN-packed linear layers (codepeft.generation.packed_linear): the same products
as torch's `linear` to rounding, used only without autograd, re-packed when a weight changes, and
what the CPU backend generates with."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama

from codepeft.generation import GenerationSettings, HFBackend
from codepeft.generation import packed_linear as pl

pytestmark = pytest.mark.skipif(not pl.available(), reason="this torch build has no oneDNN")


@pytest.fixture(autouse=True)
def _pack_small_layers(monkeypatch):
    """The tiny test models' layers are all below the size where packing pays: pack them anyway."""
    monkeypatch.setattr(pl, "MIN_WEIGHTS", 1)


def _count_packed_calls(monkeypatch) -> list:
    """A list that grows by one for every call of oneDNN's packed linear."""
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(pl.torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or real(*a), raising=False)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_layers_give_linears_products(tiny_model, dtype, monkeypatch):
    model, _ = tiny_llama(tiny_model, dtype)
    ids = torch.randint(3, 100, (3, 9))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    calls = _count_packed_calls(monkeypatch)
    packs = pl.PackedLinears()
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with packs.enabled(model), torch.no_grad():
        packed = model(input_ids=ids).logits
    assert len(calls) == len(linears) and len(packs._packs) == len(linears)  # every linear layer, packed once
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(packed, plain, **tol)
    assert all("forward" not in vars(m) for m in linears)  # as they were after the block
    with packs.enabled(model), torch.no_grad():
        model(input_ids=ids)
    assert len(calls) == 2 * len(linears) and len(packs._packs) == len(linears)  # packs reused


def test_autograd_takes_torchs_linear_and_a_changed_weight_is_packed_again():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    packs = pl.PackedLinears()
    with packs.enabled(layer):
        layer(x).sum().backward()  # oneDNN's packed op has no backward: torch's linear is used
        assert x.grad is not None and len(packs._packs) == 0
        with torch.no_grad():
            before = layer(x)
            first = packs.packed(layer)
            layer.weight.mul_(2.0)  # in place: the same storage, a new version
            after = layer(x)
            assert packs.packed(layer) is not first
            expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)


def test_packing_is_skipped_where_it_does_not_fit_or_cannot_run(tiny_model, monkeypatch):
    model, tok = tiny_llama(tiny_model)
    assert HFBackend(model, tok).packed is not None  # a CPU model that fits: packed
    assert pl.fits(model) and not pl.fits(model, share=1e-12)
    monkeypatch.setattr(pl.psutil, "virtual_memory", lambda: type("M", (), {"available": 1024})())
    assert HFBackend(model, tok).packed is None
    quantised = torch.nn.Sequential(type("Sub", (torch.nn.Linear,), {})(4, 4), torch.nn.Linear(4, 4).double())
    assert not any(pl._packable(m) for m in quantised.modules())  # subclasses and fp64 keep torch's linear
    monkeypatch.setattr(pl, "MIN_WEIGHTS", 1 << 18)
    assert not pl._packable(torch.nn.Linear(576, 8)) and pl._packable(torch.nn.Linear(576, 576))  # by size


def test_the_cpu_backend_generates_with_packed_weights_and_the_same_text(tiny_model, monkeypatch):
    model, tok = tiny_llama(tiny_model)
    backend = HFBackend(model, tok)
    calls = _count_packed_calls(monkeypatch)
    prompts = ["def add(a, b):\n", "x = [1, 2"]
    greedy = GenerationSettings(max_new_tokens=12, batch_size=2)
    sampled = GenerationSettings(n=3, temperature=0.8, top_p=0.95, max_new_tokens=12, batch_size=6)
    packed = [backend.generate(prompts, s, progress=False) for s in (greedy, sampled)]
    assert calls  # the products went through the packed weights
    backend.packed = None
    assert [backend.generate(prompts, s, progress=False) for s in (greedy, sampled)] == packed
