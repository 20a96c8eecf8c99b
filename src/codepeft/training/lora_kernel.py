"""LoRA's training step on CPU as one autograd node: dropout, the two thin products and the
scaled update together.

peft computes `result + lora_B(lora_A(dropout(x))) * scaling` as separate operations: the dropped
input is a new tensor the size of `x` that autograd keeps for `lora_A`'s gradient (one per LoRA
layer, although q, k and v read the same `x`), and the scaling and the addition are two more
passes over the output. Here the node keeps `x` itself (shared by the layers that read it) and
the dropout mask (booleans, as torch keeps them), recomputes the dropped input in the backward
pass, and adds the scaled update with one `addmm`. Masks are drawn exactly as
`codepeft.training.dropout` draws them for peft's path, in the same order, so a run consumes
the same random numbers; gradients equal peft's to rounding (tests/test_training.py).

No library offers this on CPU: fused LoRA kernels (Unsloth, Liger) are Triton, CUDA only.
Layers it does not cover (variants such as DoRA, several active adapters, biases on the LoRA
factors, mixed dtypes or autocast, non-CPU tensors) run peft's own forward.
"""

from __future__ import annotations

import contextlib

import torch

from codepeft.training.dropout import _scaled, keep_mask


class _LoraUpdate(torch.autograd.Function):
    """result + scaling * (dropout(x) @ A.T) @ B.T, for 2-D `x` and `result`."""

    @staticmethod
    def forward(ctx, x, result, a, b, p: float, scaling: float):
        mask = None
        if p > 0.0:  # on the meta device (`codepeft estimate`'s trace) a mask of the same shape
            mask = torch.empty(x.shape, dtype=torch.bool, device="meta") if x.is_meta else keep_mask(x.shape, p)
        dropped = x.mul(_scaled(mask, x.dtype, 1.0 / (1.0 - p))) if mask is not None else x
        h = dropped @ a.t()
        ctx.save_for_backward(x, mask, h, a, b)
        ctx.p, ctx.scaling = p, scaling
        return torch.addmm(result, h, b.t(), alpha=scaling)

    @staticmethod
    def backward(ctx, grad):
        x, mask, h, a, b = ctx.saved_tensors
        scale = _scaled(mask, x.dtype, 1.0 / (1.0 - ctx.p)) if mask is not None else None
        grad_h = (grad @ b).mul_(ctx.scaling)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_h @ a
            if scale is not None:
                grad_x.mul_(scale)
        if ctx.needs_input_grad[2]:
            grad_a = grad_h.t() @ (x * scale if scale is not None else x)
        if ctx.needs_input_grad[3]:
            grad_b = (grad.t() @ h).mul_(ctx.scaling)
        return grad_x, grad, grad_a, grad_b, None, None


def _covered(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The adapter this node computes for a call, or None when peft's forward must run."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or getattr(layer, "lora_bias", {}).get(name):
        return None
    a, b, dropout = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
    if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or a.bias is not None or b.bias is not None:
        return None
    if not isinstance(dropout, torch.nn.Dropout | torch.nn.Identity):
        return None
    base = getattr(layer.base_layer, "weight", None)
    if x.device.type not in ("cpu", "meta") or torch.is_autocast_enabled("cpu") or x.dtype != a.weight.dtype:
        return None
    return name if type(layer.base_layer) is torch.nn.Linear and base.dtype == x.dtype else None


def _forward(layer):
    original = layer.forward

    def forward(x, *args, **kwargs):
        name = _covered(layer, x, args, kwargs)
        if name is None:
            return original(x, *args, **kwargs)
        result = layer.base_layer(x)
        dropout = layer.lora_dropout[name]
        p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
        flat = _LoraUpdate.apply(
            x.reshape(-1, x.shape[-1]),
            result.reshape(-1, result.shape[-1]),
            layer.lora_A[name].weight,
            layer.lora_B[name].weight,
            p,
            float(layer.scaling[name]),
        )
        return flat.view(result.shape)

    return forward


@contextlib.contextmanager
def fused_lora_enabled(model: torch.nn.Module):
    """Every vanilla peft LoRA linear layer of `model` computes its update with `_LoraUpdate`
    while the block runs; the layers are as they were afterwards."""
    from peft.tuners.lora.layer import Linear

    patched = [m for m in model.modules() if type(m) is Linear]
    for m in patched:
        m.forward = _forward(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
