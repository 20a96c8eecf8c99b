"""Attention within each example of a padding-free batch.

A padding-free batch is one row holding several examples. transformers keeps them apart with a
block-diagonal mask over the whole row, which still computes (and, in training, applies dropout
to) every score of the row: its cost grows with the square of the row, not of each example.
This attention instead runs SDPA causally on each example's own slice, given the example
boundaries the collator passes as `cu_seq_lens_q` (the keyword transformers already routes from
the model's forward down to the attention function). Anything else (no boundaries, a padded
batch, generation with a cache) goes through transformers' own SDPA path unchanged.

No library offers this on CPU: flash-attention's variable-length kernels need CUDA.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

NAME = "codepeft_varlen"


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    bounds = kwargs.pop("cu_seq_lens_q", None)
    kwargs.pop("cu_seq_lens_k", None)
    if bounds is None or query.shape[0] != 1 or query.shape[2] != int(bounds[-1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    edges = bounds.tolist()
    outputs = [
        sdpa_attention_forward(
            module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, dropout, scaling, is_causal=True
        )[0]
        for s, e in zip(edges[:-1], edges[1:], strict=True)
    ]
    return torch.cat(outputs, dim=1), None  # (batch, sequence, heads, head_dim), as SDPA's


AttentionInterface.register(NAME, varlen_attention)
AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def supports_varlen(model) -> bool:
    """Models that dispatch attention through transformers' interface and support SDPA."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "_supports_sdpa", False)) and base._can_set_attn_implementation()


@contextlib.contextmanager
def varlen_attention_enabled(model):
    """Per-example attention while training; the model's own attention afterwards (saving and
    generation see the model as it was)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    base.set_attn_implementation(NAME)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
