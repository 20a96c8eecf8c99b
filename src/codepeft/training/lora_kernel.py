"""A LoRA linear layer's training step on CPU as one autograd node: the frozen product, dropout,
the two thin products and the scaled update together.

peft computes `result + lora_B(lora_A(dropout(x))) * scaling` as separate operations: the dropped
input is a new tensor the size of `x` that autograd keeps for `lora_A`'s gradient (one per LoRA
layer, although q, k and v read the same `x`), and the scaling and the addition are two more
passes over the output. Here the node keeps `x` itself (shared by the layers that read it) and
the dropout mask (booleans, as torch keeps them), recomputes the dropped input in the backward
pass, applies dropout's 1/(1-p) to the rank-r product rather than to the input, and adds the
scaled update into the frozen product in place; in the backward pass both gradients of `x` meet
in one `addmm`. Masks are drawn exactly as
`codepeft.training.dropout` draws them for peft's path, in the same order, so a run consumes
the same random numbers; gradients equal peft's to rounding (tests/test_training.py).

No library offers this on CPU: fused LoRA kernels (Unsloth, Liger) are Triton, CUDA only.
Layers it does not cover (variants such as DoRA, several active adapters, biases on the LoRA
factors, mixed dtypes or autocast, non-CPU tensors) run peft's own forward.
"""

from __future__ import annotations

import contextlib

import torch

from codepeft.training.dropout import keep_mask


class _LoraLinear(torch.autograd.Function):
    """x @ W.T + bias + scaling * (dropout(x) @ A.T) @ B.T, for 2-D `x`.

    The frozen product is computed here too, so the update is added into it in place and, in the
    backward pass, the frozen and the LoRA gradients of `x` meet inside one `addmm` instead of
    autograd adding two tensors of x's size (and `addmm` first copying the frozen output)."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, p: float, scaling: float):
        mask = None
        if p > 0.0:
            mask = keep_mask(x.shape, p, x.device)
        # The dropout scale 1/(1-p) multiplies the rank-r product, not the input: one pass over
        # `x` (`where`) instead of converting the mask to floats and multiplying twice.
        h = x @ a.t() if mask is None else (torch.where(mask, x, 0.0) @ a.t()).mul_(1.0 / (1.0 - p))
        result = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
        ctx.save_for_backward(x, weight, mask, h, a, b)
        ctx.p, ctx.scaling = p, scaling
        return result.addmm_(h, b.t(), alpha=scaling)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mask, h, a, b = ctx.saved_tensors
        grad_h = (grad @ b).mul_(ctx.scaling)
        if mask is not None:
            grad_h.mul_(1.0 / (1.0 - ctx.p))  # rank-r wide: cheaper here than at x's width
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            # (an in-place multiply reads the bool mask as 0/1 in one vectorised pass)
            lora = grad_h @ a if mask is None else (grad_h @ a).mul_(mask)
            grad_x = lora.addmm_(grad, weight)
        if ctx.needs_input_grad[1]:
            grad_w = grad.t() @ x
        if ctx.needs_input_grad[2]:  # False where there is no bias
            grad_bias = grad.sum(0)
        if ctx.needs_input_grad[3]:
            grad_a = grad_h.t() @ (x if mask is None else torch.where(mask, x, 0.0))
        if ctx.needs_input_grad[4]:
            grad_b = (grad.t() @ h).mul_(ctx.scaling)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None


def plain_lora(layer, name: str) -> bool:
    """Whether adapter `name` of a peft LoRA layer is vanilla LoRA: no variant (DoRA and the
    like), no LoRA bias, and A and B plain linear layers without biases."""
    if name in layer.lora_variant or getattr(layer, "lora_bias", {}).get(name):
        return False
    a, b = layer.lora_A[name], layer.lora_B[name]
    return type(a) is type(b) is torch.nn.Linear and a.bias is None and b.bias is None


def _covered(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The adapter this node computes for a call, or None when peft's forward must run."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or not plain_lora(layer, name):
        return None
    a, dropout = layer.lora_A[name], layer.lora_dropout[name]
    if not isinstance(dropout, torch.nn.Dropout | torch.nn.Identity):
        return None
    base = getattr(layer.base_layer, "weight", None)
    if x.device.type not in ("cpu", "meta") or torch.is_autocast_enabled("cpu") or x.dtype != a.weight.dtype:
        return None
    if type(layer.base_layer) is not torch.nn.Linear or base.dtype != x.dtype:
        return None
    hooked = layer.base_layer._forward_hooks or layer.base_layer._forward_pre_hooks
    return None if hooked else name  # the node computes the base layer's product without calling it


def _forward(layer):
    original = layer.forward

    def forward(x, *args, **kwargs):
        name = _covered(layer, x, args, kwargs)
        if name is None:
            return original(x, *args, **kwargs)
        base = layer.base_layer
        dropout = layer.lora_dropout[name]
        p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
        flat = _LoraLinear.apply(
            x.reshape(-1, x.shape[-1]),
            base.weight,
            base.bias,
            layer.lora_A[name].weight,
            layer.lora_B[name].weight,
            p,
            float(layer.scaling[name]),
        )
        return flat.view(*x.shape[:-1], flat.shape[-1])

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
