"""Attention of a one-token decode step in bf16 / fp16 on a CPU, without torch's flash kernel.

transformers runs a decode step's attention through torch's `scaled_dot_product_attention`,
whose CPU kernel (flash attention) is fast in fp32 and slow in bf16 for a single query: a
SmolLM2-135M layer with 48 rows and 151 cached tokens took 5.0 ms in bf16 against 0.8 ms in
fp32, and 0.45 ms as two batched matrix products with a softmax between them; torch's math
backend is slower still (it repeats the key/value heads). A whole bf16 decode step of
SmolLM2-135M: 66 -> 39 ms for 8 rows, 237 -> 131 ms for 48 (`benchmarks/decode_step.py`).

`enabled(model)` routes such steps, while it is active, through `attention`: the query heads
of a key/value head as one matrix (grouped-query attention without copying the cache), scores
and weights as transformers' eager attention computes them (products in the model's dtype,
softmax in fp32). Everything else (prefill, fp32, other devices, softcapping, attention sinks,
position biases) goes to transformers' own SDPA attention unchanged, and masks are built as
for SDPA. In bf16 the result differs from the flash kernel's in the last bits, as the flash
kernel's differs from eager attention's; against the fp32 model on HumanEval text the three
pick fp32's next token about equally often (98.5%, 97.9% and 98.8% of 480 steps, same
benchmark). tests/test_decode_attention.py checks the numbers against an fp32 reference and
the masking.
"""

from __future__ import annotations

import contextlib

import torch

from codepeft.models.loading import attention_implementation, base_model

NAME = "codepeft_cpu_decode"
_DTYPES = (torch.bfloat16, torch.float16)
_registered = False


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention-function contract: query (batch, heads, q, dim), key and value
    (batch, kv heads, k, dim) -> (output (batch, q, heads, dim), weights or None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    special = any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "position_bias", "cache"))
    if query.shape[2] != 1 or query.device.type != "cpu" or query.dtype not in _DTYPES or special or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # head h reads key/value head h // groups
    scores = torch.matmul(q, key.transpose(-1, -2)) * (dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:
        mask = attention_mask[..., -1:, :length]  # (batch, 1 or heads, 1, k)
        if mask.shape[1] != 1:
            mask = mask.reshape(mask.shape[0], kv_heads, heads // kv_heads, length)
        bool_mask = mask.dtype == torch.bool
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if bool_mask else scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, value).reshape(batch, 1, heads, dim), None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True


def applies(model) -> bool:
    """A decoder on a CPU in bf16 / fp16 that attends through transformers' SDPA function."""
    base = base_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or config._attn_implementation != "sdpa":
        return False
    weight = next(model.parameters())
    return weight.device.type == "cpu" and weight.dtype in _DTYPES and base._can_set_attn_implementation()


@contextlib.contextmanager
def enabled(model):
    """Within the block, `model`'s decode steps use `attention` where it applies."""
    if not applies(model):
        yield
        return
    _register()
    with attention_implementation(model, NAME):
        yield
