"""Decode-step attention in bf16 on a CPU (codepeft.generation.decode_attention): as close to the
fp32 result as torch's own kernel, masks respected, everything else left to transformers' SDPA,
and what the CPU backend decodes with in bf16."""

from __future__ import annotations

import contextlib
import types

import pytest
import torch
from helpers import tiny_llama
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from codepeft.generation import GenerationSettings, HFBackend
from codepeft.generation import decode_attention as da

MODULE = types.SimpleNamespace(num_key_value_groups=3, is_causal=True, layer_idx=0)


def _inputs(dtype, queries=1, batch=5, length=40):
    """GQA shapes (6 query heads over 2 key/value heads); rows 1 and 3 left-padded, their padded
    keys and values made huge so that any leak through the mask shows."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, 6, queries, 16, generator=gen)
    k, v = torch.randn(batch, 2, length, 16, generator=gen), torch.randn(batch, 2, length, 16, generator=gen)
    mask = torch.ones(batch, 1, queries, length, dtype=torch.bool)
    mask[1, ..., :7] = mask[3, ..., :19] = False
    k[~mask[:, :, -1, :].expand(-1, 2, -1)] = 1e4
    v[~mask[:, :, -1, :].expand(-1, 2, -1)] = -1e4
    return q.to(dtype), k.to(dtype), v.to(dtype), mask


def _reference(q, k, v, mask):
    """Masked attention in fp32, key/value heads repeated as transformers' eager attention does."""
    q, k, v = q.float(), k.float().repeat_interleave(3, 1), v.float().repeat_interleave(3, 1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2)


@pytest.mark.parametrize("mask_kind", ["bool", "additive per head", "none"])
def test_a_bf16_decode_step_is_as_close_to_fp32_as_torchs_kernel(mask_kind):
    q, k, v, mask = _inputs(torch.bfloat16)
    if mask_kind == "none":
        mask = torch.ones_like(mask)
        k, v = k.clamp(-5, 5), v.clamp(-5, 5)  # nothing is masked: no huge values either
    given = {
        "bool": mask,
        "additive per head": torch.zeros(mask.shape[0], 6, 1, mask.shape[-1]).masked_fill(~mask, -1e9).bfloat16(),
        "none": None,
    }[mask_kind]
    ours, weights = da.attention(MODULE, q, k, v, given)
    torchs, _ = sdpa_attention_forward(MODULE, q, k, v, given)
    want = _reference(q, k, v, mask)
    assert ours.shape == torchs.shape == (5, 1, 6, 16) and ours.dtype == torch.bfloat16 and weights is None
    ours_err, torchs_err = (ours.float() - want).abs().max(), (torchs.float() - want).abs().max()
    assert ours_err <= 2 * torchs_err + 1e-3 and ours_err < 3e-2, (ours_err, torchs_err)


@pytest.mark.parametrize("case", ["fp32", "prefill", "softcap"])
def test_everything_but_a_bf16_decode_step_goes_to_transformers_sdpa(case):
    q, k, v, mask = _inputs(torch.float32 if case == "fp32" else torch.bfloat16, queries=4 if case == "prefill" else 1)
    extra = {"softcap": 30.0} if case == "softcap" else {}
    if case == "softcap":  # transformers' SDPA refuses softcapping: the same refusal comes back
        with pytest.raises(ValueError, match="softcap"):
            da.attention(MODULE, q, k, v, mask, **extra)
        return
    ours, _ = da.attention(MODULE, q, k, v, mask)
    torchs, _ = sdpa_attention_forward(MODULE, q, k, v, mask)
    assert torch.equal(ours, torchs)


def _count_decode_sdpa(monkeypatch) -> list:
    """A list that grows by one for every SDPA call of a decode step: a query shorter than its
    keys (transformers folds a GQA group's query heads into the query length there)."""
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda q, k, *a, **kw: (calls.append(1) if q.shape[2] < k.shape[2] else None) or real(q, k, *a, **kw),
    )
    return calls


def test_a_bf16_models_decode_steps_use_it_inside_the_block_only(tiny_model, monkeypatch):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_llama(tiny_model, torch.bfloat16)
    assert da.applies(model) and da.applies(get_peft_model(tiny_llama(tiny_model, torch.bfloat16)[0], LoraConfig()))
    assert not da.applies(tiny_llama(tiny_model, torch.float32)[0])  # fp32 keeps transformers' SDPA, bit for bit
    tok.padding_side = "left"
    enc = tok(["def f(x):", "import os\nimport sys\n\ndef main(argv):"], return_tensors="pt", padding=True)
    step = torch.tensor([[5], [9]])

    def decode(use):
        with torch.no_grad(), da.enabled(model) if use else contextlib.nullcontext():
            out = model(**enc, use_cache=True)
            mask = torch.cat([enc["attention_mask"], torch.ones_like(step)], 1)
            return model(input_ids=step, attention_mask=mask, past_key_values=out.past_key_values).logits

    calls = _count_decode_sdpa(monkeypatch)
    ours = decode(True)
    assert calls == [] and model.config._attn_implementation == "sdpa"  # not SDPA inside; restored after
    torchs = decode(False)
    assert len(calls) == model.config.num_hidden_layers
    model.set_attn_implementation("eager")
    eager = decode(False)
    ours_err, torchs_err = (ours.float() - eager.float()).abs().max(), (torchs.float() - eager.float()).abs().max()
    assert ours_err <= 2 * torchs_err + 0.05, (ours_err, torchs_err)


def test_the_cpu_backend_decodes_bf16_with_it(tiny_model, monkeypatch):
    model, tok = tiny_llama(tiny_model, torch.bfloat16)
    settings = GenerationSettings(n=1, temperature=0.0, max_new_tokens=6, batch_size=2)
    calls = _count_decode_sdpa(monkeypatch)
    texts = HFBackend(model, tok).generate(["def f(x):", "x = 1"], settings, progress=False)
    assert calls == [] and [len(t) for t in texts] == [1, 1]
    monkeypatch.setattr(da, "applies", lambda model: False)
    HFBackend(model, tok).generate(["def f(x):", "x = 1"], settings, progress=False)
    assert calls  # the same generation without it decodes with SDPA
