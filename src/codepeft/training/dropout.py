"""Dropout whose masks are cheap to draw on CPU.

torch draws a CPU dropout mask with one Mersenne-Twister call per element (`bernoulli_`), which
took over a quarter of a training step of the default model (benchmarks/RESULTS.md). Here a mask
takes one 64-bit seed from torch's default generator, so `seed` and checkpoint RNG states apply
as to torch's dropout; numpy's SFC64 generator, seeded with it, gives the mask's bits. Each
64-bit word gives the keep/drop decisions of four elements: an element is dropped when its 16
random bits fall below round(p * 65536), so the drop rate differs from p by at most 1/131072.
numpy draws these words twice as fast as torch's generator, and its comparison of 16-bit lanes
is vectorised where torch's is not (together 0.39 against 1.1 ms for a 1,224 x 576 mask on two
cores, benchmarks/NOTES.md). The mask is kept as booleans for the backward pass, as torch's own
dropout keeps it, so memory is unchanged.

Only CPU tensors take this path (and meta ones, which `codepeft estimate` traces); elsewhere
(CUDA's dropout is already fast) it is torch's.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

_LEVELS = 1 << 16
_active = 0  # > 0 while a `fast_dropout_enabled` block runs


def active() -> bool:
    """Whether attention implementations should draw their dropout masks here too."""
    return _active > 0


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Booleans, True with probability 1 - p (to within 2**-17); on the meta device (`codepeft
    estimate`'s trace) an empty mask of the same shape and type."""
    if torch.device(device).type == "meta":
        return torch.empty(shape, dtype=torch.bool, device="meta")
    n = math.prod(shape)
    seed = int(torch.empty((), dtype=torch.int64).random_())  # from torch's generator: `seed` applies
    words = np.random.SFC64(seed).random_raw((n + 3) // 4)
    keep = np.greater_equal(words.view(np.uint16)[:n], round(p * _LEVELS))
    return torch.from_numpy(keep).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        # `where` and an in-place multiply by the bool mask are single vectorised passes; converting
        # the mask to floats first (or an out-of-place multiply by it) is a slow generic cast.
        return torch.where(mask, x, 0.0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad.mul(ctx.scale).mul_(mask), None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Same contract as `torch.nn.functional.dropout` (not in place)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    if x.device.type not in ("cpu", "meta"):  # (meta: what `codepeft estimate` traces)
        return torch.nn.functional.dropout(x, p, True)
    return _Dropout.apply(x, p)


def _forward(module: torch.nn.Dropout):
    return lambda x: dropout(x, module.p, module.training)


@contextlib.contextmanager
def fast_dropout_enabled(model: torch.nn.Module):
    """Every `nn.Dropout` of `model` (the base model's and peft's) draws its masks here while
    the block runs; the modules are as they were afterwards."""
    global _active
    patched = [m for m in model.modules() if type(m) is torch.nn.Dropout and not m.inplace]
    for m in patched:
        m.forward = _forward(m)
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        for m in patched:
            del m.forward
