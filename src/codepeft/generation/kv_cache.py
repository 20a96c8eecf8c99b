"""A KV cache that grows in place: transformers' `DynamicCache` with layers that reserve room.

transformers' `DynamicLayer` appends each step's keys and values with `torch.cat`, copying the
whole cache every step: on a CPU, decoding 40 rows of SmolLM2 at 200 tokens of context spends
a third of each step in those copies (torch.profiler). Its `StaticCache` avoids them but attends
over the whole reserved length every step. `GrowingLayer` writes into a buffer with room to
spare and hands attention a view of the filled part (same values, same shapes); the buffer is
copied only when it is full (room for max(128, half the length) more tokens each time).

Layers with a sliding window keep transformers' own behaviour: `growing_cache` returns None for
such models, and `generate` builds its default cache.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """`keys` / `values` are views of the first `get_seq_length()` positions of larger buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer = self.value_buffer = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if self.key_buffer is None or end > self.key_buffer.shape[-2]:
            self._reserve(end + max(128, end // 2), key_states, value_states)
        self.key_buffer[..., start:end, :].copy_(key_states)
        self.value_buffer[..., start:end, :].copy_(value_states)
        self._view(end)
        return self.keys, self.values

    def _reserve(self, length: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        filled = self.get_seq_length()
        buffers = []
        for old, new in ((self.key_buffer, key_states), (self.value_buffer, value_states)):
            shape = (*new.shape[:-2], length, new.shape[-1])
            buffer = torch.empty(shape, dtype=new.dtype, device=new.device)
            if filled:
                buffer[..., :filled, :].copy_(old[..., :filled, :])
            buffers.append(buffer)
        self.key_buffer, self.value_buffer = buffers

    def _view(self, length: int) -> None:
        self.keys = self.key_buffer[..., :length, :]
        self.values = self.value_buffer[..., :length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            length = self.get_seq_length()
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._view(length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            length = self.get_seq_length()
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._view(length)

    def reset(self) -> None:
        self.key_buffer = self.value_buffer = None
        super().reset()


def growing_cache(model) -> DynamicCache | None:
    """An empty cache of `GrowingLayer`s for `model`, or None where its attention has a sliding
    window or it is an encoder-decoder (transformers' own cache there)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    if getattr(config, "sliding_window", None) or "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return None
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache
