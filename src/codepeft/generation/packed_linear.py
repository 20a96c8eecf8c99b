"""Linear layers that generate with oneDNN-packed weights on a CPU.

A decode step multiplies a few rows by every weight matrix of the model. torch's CPU `linear`
hands each product to a general GEMM that works from the weight's row-major layout on every
call; oneDNN's `linear` over a weight reordered once into its blocked layout does the same
product faster. SmolLM2-135M's weight products of one decode step on two cores (fp32): 46 ms for
1 row, 65 for 4, 104 for 40, 155 for 60 with torch's `linear`; 27, 24, 66 and 92 ms packed
(benchmarks/NOTES.md). The reorder is the one torch.compile's CPU weight-prepacking applies to
frozen models; no eager library does it for `generate`.

`PackedLinears` packs each plain `nn.Linear` weight (fp32 or bf16, on the CPU, `MIN_WEIGHTS` or
more) the first time it is used and again if the weight changes, and uses the packed copy only
without autograd. The copies, kept as long as the backend, cost one more copy of those weights,
so a backend packs only where they fit well within the memory available (`fits`). Results equal
torch's `linear` to rounding (oneDNN sums in another order).
"""

from __future__ import annotations

import contextlib
import weakref

import psutil
import torch

PACKABLE = (torch.float32, torch.bfloat16)
# Below about this many weights oneDNN's call costs more than it saves: a rank-8 LoRA matrix
# (8 x 576) took 16 us packed against 5 with torch's `linear` (fp32, 8 rows), SmolLM2's 192 x 576
# key projection 83 against 63 us (40 rows); 576 x 576 and larger gain at every row count measured.
MIN_WEIGHTS = 1 << 18


def available() -> bool:
    """Whether this torch build has the oneDNN operators (CPU builds with mkldnn)."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")
    )


def _packable(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module) is torch.nn.Linear  # (not bitsandbytes' or other subclasses)
        and "forward" not in vars(module)  # a forward already replaced (accelerate's hooks) stays
        and weight is not None
        and weight.device.type == "cpu"
        and weight.dtype in PACKABLE
        and weight.numel() >= MIN_WEIGHTS
        and (module.bias is None or module.bias.dtype == weight.dtype)
    )


def fits(model: torch.nn.Module, share: float = 0.25) -> bool:
    """Whether packed copies of `model`'s linear weights take at most `share` of the memory
    available now."""
    size = sum(m.weight.nbytes for m in model.modules() if _packable(m))
    return size <= share * psutil.virtual_memory().available


class PackedLinears:
    """Packed copies of linear weights, made once per module (and again if its weight changes)."""

    def __init__(self) -> None:
        self._packs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def packed(self, module: torch.nn.Linear) -> torch.Tensor:
        weight = module.weight
        key = (weight.data_ptr(), weight._version, weight.dtype)
        entry = self._packs.get(module)
        if entry is None or entry[0] != key:
            entry = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
            self._packs[module] = entry
        return entry[1]

    def _forward(self, module: torch.nn.Linear):
        def forward(x: torch.Tensor) -> torch.Tensor:
            weight = module.weight
            if torch.is_grad_enabled() or x.dtype != weight.dtype or x.device.type != "cpu" or x.dim() < 2:
                return torch.nn.functional.linear(x, weight, module.bias)
            return torch.ops.mkldnn._linear_pointwise(x, self.packed(module), module.bias, "none", [], "")

        return forward

    @contextlib.contextmanager
    def enabled(self, model: torch.nn.Module):
        """Every packable linear layer of `model` computes with its packed weight while the block
        runs; the layers are as they were afterwards."""
        patched = [m for m in model.modules() if _packable(m)]
        for m in patched:
            m.forward = self._forward(m)
        try:
            yield
        finally:
            for m in patched:
                del m.forward
