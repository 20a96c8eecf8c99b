"""`codepeft estimate`: peak training memory and trainable parameters before spending money.

The model is built on PyTorch's meta device from its config alone (no weights are read), the
method is applied to it, and the parameters are counted exactly. Memory is the sum of:
- weights: frozen parameters in their dtype, or bitsandbytes NF4 / int8 for the linear layers
  of a quantised base (4 bits + one fp32 absmax per 64 values, second-level quantised: ~4.13
  bits; int8: 8 bits + one fp32 scale per row);
- trainable parameters in fp32 with their gradient and the optimizer's state (AdamW: two fp32
  moments; Adafactor: factored second moments, counted as one row + one column per matrix);
- activations kept for the backward pass, per layer and token (the per-layer terms of Korthikanti
  et al. 2022 for the attention and MLP blocks, in the compute dtype), or only each layer's
  input with gradient checkpointing plus one layer recomputed; attention scores only for eager
  attention (SDPA kernels do not keep them);
- the logits and their gradient in fp32 (vocabulary x tokens), large for small models;
- a fixed runtime overhead (CUDA context, or the CPU process's libraries), stated separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from codepeft.errors import CodepeftError

GB = 2**30
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
RUNTIME = {"cuda": 0.45 * GB, "cpu": 0.0}  # CUDA context + kernels; on CPU the measured baseline is subtracted


@dataclass
class Estimate:
    model: str
    method: str
    total_params: int
    trainable_params: int
    weights_bytes: float
    trainable_state_bytes: float
    activations_bytes: float
    logits_bytes: float
    runtime_bytes: float
    gradient_checkpointing: bool

    @property
    def peak_bytes(self) -> float:
        return (
            self.weights_bytes
            + self.trainable_state_bytes
            + self.activations_bytes
            + self.logits_bytes
            + self.runtime_bytes
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "peak_gb": round(self.peak_bytes / GB, 3)}


def _dims(config) -> dict:
    text = getattr(config, "text_config", None) or config
    get = lambda *names, default=None: next(  # noqa: E731
        (getattr(text, n) for n in names if getattr(text, n, None) is not None), default
    )
    hidden = get("hidden_size", "n_embd", "d_model")
    layers = get("num_hidden_layers", "n_layer", "num_layers")
    if hidden is None or layers is None:
        raise CodepeftError(f"cannot read the hidden size and layer count of a {config.model_type} config")
    if getattr(config, "is_encoder_decoder", False):
        layers = layers + get("num_decoder_layers", default=layers)
    heads = get("num_attention_heads", "n_head", "num_heads", default=1)
    inner = get("intermediate_size", "n_inner", "d_ff", default=None) or 4 * hidden
    gated = "gated" in str(get("feed_forward_proj", default="")) or get("hidden_act", default="") in ("silu", "swiglu")
    return {
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "inner": inner,
        "vocab": text.vocab_size,
        "gated": gated,
        "cross_attention": bool(getattr(config, "is_encoder_decoder", False)),
        "dropout": get("resid_pdrop", "hidden_dropout", "dropout_rate", "dropout", default=0.0) or 0.0,
        "attention_dropout": get("attn_pdrop", "attention_dropout", "dropout_rate", default=0.0) or 0.0,
    }


def _dropout_inputs(model) -> int:
    """Summed input width of the layers whose adapter applies dropout to its input (peft LoRA)."""
    total = 0
    for module in model.modules():
        dropout = getattr(module, "lora_dropout", None)
        if isinstance(dropout, torch.nn.ModuleDict) and any(
            isinstance(m, torch.nn.Dropout) and m.p > 0 for m in dropout.values()
        ):
            total += getattr(module, "in_features", 0) or 0
    return total


def _meta_model(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


def _linear_params(model) -> int:
    # the layers bitsandbytes replaces: every nn.Linear except the output head
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


def estimate(
    model: str,
    method: str = "lora",
    method_options: dict | None = None,
    seq_len: int = 2048,
    batch: int = 1,
    dtype: str = "bf16",
    quantization: str | None = None,
    gradient_checkpointing: bool = False,
    optimizer: str = "adamw",
    attention: str = "sdpa",
    device: str = "cuda",
) -> Estimate:
    from codepeft.config import ModelSpec
    from codepeft.methods import ApplyContext, count_parameters, get_method
    from codepeft.methods.apply import effective_quantization
    from codepeft.models.loading import load_config, resolve_name

    if dtype not in BYTES:
        raise CodepeftError(f"dtype must be fp32, bf16 or fp16, not {dtype!r}")
    path = resolve_name(model)
    config = load_config(path)
    m = get_method(method)
    if m.family == "baseline":
        raise CodepeftError(f"{method} is a prompting baseline: it trains nothing (memory is that of inference)")
    options = m.options(method_options or {})
    quant = effective_quantization(m, options, ModelSpec(name_or_path=path, quantization=quantization or "none"))
    meta = _meta_model(config)
    base_total = sum(p.numel() for p in meta.parameters())
    linear = _linear_params(meta)
    tuned = m.apply(meta, options, ApplyContext(tokenizer_path=path if method == "prompt" else None))
    counts = count_parameters(tuned)
    trainable = int(counts["trainable_params"])
    frozen = base_total if m.family != "full" else 0
    width = BYTES[dtype]

    if quant == "4bit":
        weights = linear * (4 + 0.127) / 8 + (frozen - linear) * width
    elif quant == "8bit":
        weights = linear * 1.0 + (frozen - linear) * width + 4 * linear / _dims(config)["hidden"]
    else:
        weights = frozen * width
    per_param = 4 + 4 + (8 if optimizer.startswith("adam") else 2)  # fp32 weight, gradient, optimizer state
    state = trainable * per_param

    d = _dims(config)
    tokens = seq_len * batch
    virtual = getattr(getattr(tuned, "peft_config", {}).get("default"), "num_virtual_tokens", 0) or 0
    tokens += virtual * batch
    act_width = width if dtype != "fp32" else 4
    # After Korthikanti et al., per token and layer, in the compute dtype: the attention block and
    # layer norms keep about 10 h values for their own backward, the MLP its activation's inputs
    # (1 x inner; gated MLPs: gate, up and activation, 3 x inner). The inputs of the linear layers
    # (3 h + inner) are kept only when those layers' weights train: a frozen layer needs its
    # weight, not its input, to pass the gradient on.
    per_layer_values = tokens * (10 * d["hidden"] + (3 if d["gated"] else 1) * d["inner"])
    if m.family == "full":
        per_layer_values += tokens * (3 * d["hidden"] + d["inner"])
    if d["dropout"] > 0:  # residual dropouts keep their output and a 1-byte mask
        per_layer_values += tokens * 2 * d["hidden"] * (1 + 1 / act_width)
    if d["attention_dropout"] > 0 or attention == "eager":  # probabilities kept (and dropped out)
        copies = 2 + 1 / act_width if d["attention_dropout"] > 0 else 1
        per_layer_values += copies * batch * d["heads"] * (seq_len + virtual) ** 2
    if d["cross_attention"]:  # decoder layers (half of them) also attend to the encoder
        per_layer_values += 0.5 * (tokens * 6 * d["hidden"] + batch * d["heads"] * seq_len**2 * 2)
    per_layer = per_layer_values * act_width
    # LoRA-style dropout on a layer's input keeps a dropped-out copy of that input (and its mask).
    dropout_values = tokens * _dropout_inputs(tuned) / d["layers"]
    per_layer += dropout_values * (act_width + 1)
    if gradient_checkpointing:
        activations = d["layers"] * tokens * d["hidden"] * act_width + per_layer
    else:
        activations = d["layers"] * per_layer
    # fp32 logits, their log-softmax kept for the loss, and both gradients during backward
    logits = 4 * tokens * d["vocab"] * 4
    return Estimate(
        model=model,
        method=method,
        total_params=int(counts["total_params"]),
        trainable_params=trainable,
        weights_bytes=float(weights),
        trainable_state_bytes=float(state),
        activations_bytes=float(activations),
        logits_bytes=float(logits),
        runtime_bytes=RUNTIME.get(device, 0.0),
        gradient_checkpointing=gradient_checkpointing,
    )


def suggest(budget_gb: float, **kwargs) -> tuple[str, Estimate] | None:
    """The cheapest change (in what it costs the user) that fits the budget, or None."""
    steps = [
        ("turn on gradient checkpointing", {"gradient_checkpointing": True}),
        ("halve the batch (double gradient accumulation)", {"batch": max(1, kwargs.get("batch", 1) // 2)}),
        ("batch 1 with gradient accumulation", {"batch": 1, "gradient_checkpointing": True}),
    ]
    method = kwargs.get("method", "lora")
    if method == "full":
        steps.append(("use LoRA instead of full fine-tuning", {"method": "lora", "method_options": {}}))
    if method in ("full", "lora"):
        steps.append(
            ("use QLoRA (4-bit base)", {"method": "qlora", "method_options": {}, "gradient_checkpointing": True})
        )
    steps.append(("halve the sequence length", {"seq_len": kwargs.get("seq_len", 2048) // 2}))
    for words, change in steps:
        candidate = estimate(**{**kwargs, **change})
        if candidate.peak_bytes <= budget_gb * GB:
            return words, candidate
    return None
