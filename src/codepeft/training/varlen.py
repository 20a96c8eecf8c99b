"""Attention within each example of a padding-free batch.

A padding-free batch is one row holding several examples. transformers keeps them apart with a
block-diagonal mask over the whole row, which still computes (and, in training, applies dropout
to) every score of the row: its cost grows with the square of the row, not of each example.
This attention instead runs SDPA causally on each example's own slice, given the example
boundaries the collator passes as `cu_seq_lens_q` (the keyword transformers already routes from
the model's forward down to the attention function). Anything else (no boundaries, a padded
batch, generation with a cache) goes through transformers' own SDPA path unchanged.

No library offers this on CPU: flash-attention's variable-length kernels need CUDA.

With attention dropout on a CPU, SDPA falls back to its unfused path anyway and draws the mask
with torch's slow per-element generator; inside `fast_dropout_enabled` that case is computed
here (the same operations) with the masks of `codepeft.training.dropout`.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from codepeft.models.loading import attention_implementation, base_model
from codepeft.training import dropout as fast

NAME = "codepeft_varlen"


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    bounds = kwargs.pop("cu_seq_lens_q", None)
    kwargs.pop("cu_seq_lens_k", None)
    if bounds is None or query.shape[0] != 1 or query.shape[2] != int(bounds[-1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    edges = bounds.tolist()
    lengths = [e - s for s, e in zip(edges[:-1], edges[1:], strict=True)]
    unfused = dropout > 0.0 and query.device.type == "cpu" and fast.active()
    if unfused and key.shape[1] != query.shape[1]:
        key = repeat_kv(key, query.shape[1] // key.shape[1])
        value = repeat_kv(value, query.shape[1] // value.shape[1])
    # `split`, not a slice per example: its backward joins the examples' gradients in one pass,
    # where each slice's backward would fill a zero tensor of the whole row and add it up.
    parts = zip(*(t.split(lengths, dim=2) for t in (query, key, value)), strict=True)
    if unfused:
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        outputs = [_causal_attention(q, k, v, scale, dropout) for q, k, v in parts]
    else:
        outputs = [
            sdpa_attention_forward(module, q, k, v, None, dropout, scaling, is_causal=True)[0] for q, k, v in parts
        ]
    return torch.cat(outputs, dim=1), None  # (batch, sequence, heads, head_dim), as SDPA's


def _causal_attention(query, key, value, scale: float, dropout: float) -> torch.Tensor:
    """SDPA's unfused computation (softmax of masked scores, dropout, weighted sum)."""
    n = query.shape[2]
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scale)
    scores.masked_fill_(torch.ones(n, n, dtype=torch.bool).triu_(1), float("-inf"))
    weights = fast.dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2)


AttentionInterface.register(NAME, varlen_attention)
AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def supports_varlen(model) -> bool:
    """Models that dispatch attention through transformers' interface and support SDPA."""
    base = base_model(model)
    return bool(getattr(base, "_supports_sdpa", False)) and base._can_set_attn_implementation()


def varlen_attention_enabled(model):
    """Per-example attention while training; the model's own attention afterwards (saving and
    generation see the model as it was)."""
    return attention_implementation(model, NAME)
