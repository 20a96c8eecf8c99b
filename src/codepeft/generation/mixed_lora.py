"""peft's mixed-adapter LoRA forward, made to compute what the single-adapter forward computes.

For a LoRA layer over a bf16 base with fp32 adapter weights (codepeft's layout on CPUs with fast
bf16), peft's single-adapter forward adds the fp32 LoRA output to the bf16 base output in fp32
and rounds the sum to bf16 once; its mixed-batch forward rounds the LoRA output to bf16 first
and adds in bf16. The two differ in the last bit, which is enough to change a greedy completion
after a few dozen tokens. While `exact_mixed_batches` is active, each vanilla LoRA `Linear`
layer adds its sub-batch's LoRA output the way the single-adapter forward does, so a row of a
mixed batch gets the numbers it gets alone.
"""

from __future__ import annotations

import contextlib
import types

import torch


def _mixed_batch_forward(self, x: torch.Tensor, *args, adapter_names: list[str], **kwargs) -> torch.Tensor:
    from peft.tuners.lora.layer import VARIANT_KWARG_KEYS

    kwargs = {k: v for k, v in kwargs.items() if k not in VARIANT_KWARG_KEYS}  # vanilla LoRA uses none
    result = self.base_layer(x, *args, **kwargs)
    dtype = result.dtype
    for adapter in dict.fromkeys(adapter_names):
        if adapter not in self.lora_A:
            continue  # "__base__" rows, or an adapter that does not touch this layer
        rows = [i for i, name in enumerate(adapter_names) if name == adapter]
        lora_A, lora_B = self.lora_A[adapter], self.lora_B[adapter]
        sub = self._cast_input_dtype(x[rows], lora_A.weight.dtype)
        total = result[rows] + lora_B(lora_A(self.lora_dropout[adapter](sub))) * self.scaling[adapter]
        result[rows] = total.to(dtype)
    return result


@contextlib.contextmanager
def exact_mixed_batches(model):
    """Within the block, vanilla LoRA layers of `model` run mixed batches as described above;
    other layers (LoRA variants, quantised layers) keep peft's own mixed-batch forward."""
    from peft.tuners.lora.layer import Linear

    patched = [m for m in model.modules() if type(m) is Linear and not m.lora_variant and not m.lora_embedding_A]
    for module in patched:
        module._mixed_batch_forward = types.MethodType(_mixed_batch_forward, module)
    try:
        yield
    finally:
        for module in patched:
            del module._mixed_batch_forward
