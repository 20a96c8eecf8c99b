"""LoRA layers at generation time: peft's single-adapter arithmetic, for one adapter or a mixed
batch, with little around it.

`lean_lora(model)` gives every vanilla peft LoRA `Linear` of `model`, while the block runs and
autograd is off, a forward that computes `(base(x) + B(A(x)) * scaling).to(base dtype)` as
peft's single-adapter forward does (the same operations in the same order, so the same bits),
for:

- the active adapter(s): peft's forward spends much of its time on its checks, module calls
  and dropout (the identity at generation time): a bf16 SmolLM2-135M decode step with rank-8
  LoRA on every linear layer (210 layers), 8 rows: 95 ms with peft's forward, 84 ms with this
  one (`benchmarks/decode_step.py`);
- a mixed batch (`adapter_names`, peft's multi-adapter inference): peft's mixed-batch forward
  rounds each adapter's output to the base dtype before adding it (bf16 + bf16 where the
  single-adapter forward adds in fp32 and rounds once: the last bit differs, enough to change
  a greedy completion after a few dozen tokens), and gathers and scatters each adapter's rows
  by index. Here the rows of an adapter are taken as runs (a merged batch holds each member's
  rows in a block): a run is a slice, and gets the numbers it gets alone, so evaluating several
  adapters together gives what each gives alone (tests/test_together.py). Six adapters' 48
  rows in one step: 355 ms with peft's mixed-batch forward, 242 ms here.

Layers this does not cover (LoRA variants such as DoRA, LoRA biases, quantised or other base
layers, dropout in training mode, inputs that are not cast) keep peft's forward, as does any
call with autograd on.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import torch.nn.functional as F


def _factors(layer, lora_linear: type) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]] | None:
    """adapter -> (A, B, scaling) for every adapter of a layer this covers; None if any is not."""
    if type(layer) is not lora_linear or not getattr(layer, "cast_input_dtype_enabled", True):
        return None
    from codepeft.training.lora_kernel import plain_lora  # only here: importing codepeft.training is slow

    factors = {}
    for name, a in layer.lora_A.items():
        dropout = layer.lora_dropout[name]
        identity = type(dropout) is torch.nn.Identity or (type(dropout) is torch.nn.Dropout and not dropout.training)
        if not (plain_lora(layer, name) and identity):
            return None
        factors[name] = (a.weight, layer.lora_B[name].weight, layer.scaling[name])
    return factors


def _lean_forward(layer, factors, original):
    base = layer.base_layer

    def forward(x, *args, **kwargs):
        names = kwargs.get("adapter_names")
        unusual = args or len(kwargs) > (names is not None) or layer.lora_A.keys() != factors.keys()
        if unusual or torch.is_grad_enabled() or layer.disable_adapters or layer.merged:
            return original(x, *args, **kwargs)
        result = base(x)
        if names is None:
            out, cast = result, x
            for adapter in layer.active_adapters:
                if adapter in factors:
                    a, b, scaling = factors[adapter]
                    cast = cast.to(a.dtype)
                    out = out + F.linear(F.linear(cast, a), b) * scaling
            return out.to(result.dtype)
        start, cast = 0, x
        for adapter, run in itertools.groupby(names):
            stop = start + sum(1 for _ in run)
            if adapter in factors:  # not "__base__" rows, nor an adapter that does not touch this layer
                a, b, scaling = factors[adapter]
                cast = cast.to(a.dtype)  # the whole batch cast once, not once an adapter
                part = result[start:stop]
                part.copy_(part + F.linear(F.linear(cast[start:stop], a), b) * scaling)
            start = stop
        return result

    return forward


@contextlib.contextmanager
def lean_lora(model):
    """Within the block, the covered LoRA layers of `model` run as described above; the layers
    are as they were afterwards."""
    from peft.tuners.lora.layer import Linear

    patched = []
    for module in model.modules():
        factors = _factors(module, Linear) if "forward" not in vars(module) else None
        if factors:
            module.forward = _lean_forward(module, factors, module.forward)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
