"""Apply a method to a loaded model, refuse impossible combinations, count and merge."""

from __future__ import annotations

import torch.nn as nn
from peft import PeftModel

from codepeft.config import MethodSpec, ModelSpec, TrainSpec
from codepeft.errors import CodepeftError
from codepeft.methods.registry import ApplyContext, Method, MethodFamily, bitsandbytes_available, get_method


def effective_quantization(method: Method, options: dict, model: ModelSpec) -> str:
    """The base-model quantization a run really uses (qlora implies 4-bit unless told 8)."""
    if method.requires_quantization:
        bits = options.get("bits", 4)
        if bits not in (4, 8):
            raise CodepeftError(f"method.bits must be 4 or 8, got {bits!r}")
        wanted = f"{bits}bit"
        if model.quantization not in ("none", wanted):
            raise CodepeftError(
                f"method {method.name} with bits={bits} conflicts with model.quantization={model.quantization}"
            )
        return wanted
    return model.quantization


def refuse_untrainable(method: Method) -> None:
    if not method.trains:
        raise CodepeftError(
            f"{method.name} is a prompting baseline and trains nothing: evaluate it with "
            f"`codepeft eval MODEL --method {method.name}`"
        )


def check_combination(method: Method, options: dict, model: ModelSpec, train: TrainSpec) -> str:
    """Refuse up front what cannot work; returns the effective quantization."""
    refuse_untrainable(method)
    quant = effective_quantization(method, options, model)
    if train.gradient_checkpointing and method.refuses_gradient_checkpointing:
        raise CodepeftError(
            f"method {method.name} cannot train with gradient checkpointing (peft refuses it: the cached "
            "prefixes are not recomputed). Set train.gradient_checkpointing=false, or use ptuning / prompt."
        )
    if quant != "none":
        if not method.quantizable:
            raise CodepeftError(
                f"method {method.name} cannot train on a quantized base (it updates the base weights or has "
                f"no quantized layer). Use model.quantization=none, or qlora / lora on a {quant} base."
            )
        if not bitsandbytes_available():
            raise CodepeftError(
                f"{quant} quantization needs bitsandbytes: pip install 'codepeft[quant]'; "
                "or use method lora with model.quantization=none"
            )
    return quant


def apply_method(model: nn.Module, spec: MethodSpec, ctx: ApplyContext | None = None) -> nn.Module:
    method = get_method(spec.name)
    refuse_untrainable(method)
    options = method.options(spec.options)
    return method.apply(model, options, ctx or ApplyContext())


def count_parameters(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameters; 4-bit weights are counted as the values they hold."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        # bitsandbytes packs two 4-bit values into one uint8 element.
        if p.dtype.itemsize == 1 and getattr(p, "quant_state", None) is not None:
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_ratio": trainable / max(total, 1),
    }


def merge_model(model: nn.Module, method_name: str) -> nn.Module:
    """Fold the tuned weights into the base model where the method allows it."""
    method = get_method(method_name)
    if method.family is MethodFamily.FULL:
        return model
    if not method.mergeable or not isinstance(model, PeftModel):
        why = (
            "its bottleneck MLP is non-linear, so it cannot be folded into a weight matrix"
            if method.family is MethodFamily.ADAPTER
            else "it adds inputs (virtual tokens / prefixes) or modules rather than weight deltas"
        )
        raise CodepeftError(f"method {method.name} cannot be merged: {why}. Serve it with the adapter instead.")
    return model.merge_and_unload()
