"""`codepeft estimate`: peak training memory and trainable parameters before spending money.

The model is built on PyTorch's meta device from its config alone (no weights are read), the
method is applied to it, and the parameters are counted exactly. Memory is the sum of:
- weights: frozen parameters in their dtype, or bitsandbytes NF4 / int8 for the linear layers
  of a quantised base (4 bits + one fp32 absmax per 64 values, second-level quantised: ~4.13
  bits; int8: 8 bits + one fp32 scale per row) on a GPU; on CPU, bitsandbytes' backend is measured
  to keep the base in the compute dtype as well, so a quantised base saves no memory there;
- trainable parameters in fp32 with their gradient and the optimizer's state (AdamW: two fp32
  moments; Adafactor: factored second moments, counted as one row + one column per matrix);
- activations: the tensors autograd keeps for the backward pass, traced from one forward pass
  of the tuned model on the meta device (every distinct storage once, parameters not), with
  SDPA counted as the fused kernel the device runs (no scores kept; PyTorch's CPU kernel falls
  back to the unfused path when attention dropout is on, and so does the trace); with gradient
  checkpointing, each layer's input plus one layer recomputed;
- the loss's backward: the fp32 log-softmax of the logits, its gradient and the logits'
  gradient (3 x 4 bytes per logit), large for small models;
- gradients of the trainable parameters only where they outgrow the activations the backward
  pass frees while they accumulate;
- a fixed runtime overhead (CUDA context, or the CPU process's libraries), stated separately.

The trace follows each architecture and method exactly (fp32 norms, dropout masks, virtual
tokens, adapters' inputs, eager attention's scores), where per-layer formulas (Korthikanti et
al. 2022) miss what differs between implementations.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from codepeft.errors import CodepeftError
from codepeft.families import MethodFamily

GB = 2**30
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FUSED = "codepeft_fused_meta"
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
    return {
        "hidden": hidden,
        "layers": layers,
        "attention_dropout": get("attn_pdrop", "attention_dropout", "dropout_rate", default=0.0) or 0.0,
    }


def _meta_model(config, dtype: str = "fp32", attention: str = "sdpa"):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        try:
            return auto.from_config(config, dtype=DTYPES[dtype], attn_implementation=attention)
        except ValueError:  # the architecture has no SDPA path: eager, as when training it
            return auto.from_config(config, dtype=DTYPES[dtype], attn_implementation="eager")


class _FusedAttention(torch.autograd.Function):
    """Stands in for a fused SDPA kernel (flash / memory-efficient, CPU or CUDA) on the meta
    device, where PyTorch would pick its unfused path: keeps what those kernels keep for the
    backward pass (query, key, value, output and the fp32 log-sum-exp per query), no scores."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = torch.empty_like(query)
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        return grad, key.new_zeros(key.shape), value.new_zeros(value.shape)


def _fused_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    return _FusedAttention.apply(query, key, value).transpose(1, 2), None


AttentionInterface.register(FUSED, _fused_attention)
AttentionMaskInterface.register(FUSED, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def traced_activations(
    model, batch: int, seq_len: int, fused_attention: bool, lora_kernel: bool = False, bool_masks: bool = False
) -> tuple[float, int]:
    """(bytes autograd keeps after a training forward pass of `model`, a meta-device model;
    number of logits). Every distinct storage saved for backward counts once, parameters not.

    Tracing the real forward pass follows each architecture and method exactly (norms kept in
    fp32, dropout masks, virtual tokens, adapters' inputs, eager attention's scores), which a
    per-layer formula cannot. SDPA is traced as the fused kernel the real device would run, and
    LoRA layers, with `lora_kernel`, as training's CPU kernel (codepeft.training.lora_kernel).
    Dropout modules keep one bool per element with `bool_masks` (CUDA's fused kernel and
    training's CPU masks, codepeft.training.dropout), else a float mask (torch's CPU dropout,
    and what the meta device traces by itself)."""
    from codepeft.models.loading import attention_implementation, base_model
    from codepeft.training.dropout import fast_dropout_enabled
    from codepeft.training.lora_kernel import fused_lora_enabled

    base = base_model(model)
    swap = fused_attention and base.config._attn_implementation == "sdpa"
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            kept[storage._cdata] = storage.nbytes()
        return t

    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    inputs = {"input_ids": ids}
    if getattr(base.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids
    was_training = model.training
    model.train()
    try:
        with (
            attention_implementation(model, FUSED) if swap else contextlib.nullcontext(),
            fused_lora_enabled(model) if lora_kernel else contextlib.nullcontext(),
            fast_dropout_enabled(model) if bool_masks else contextlib.nullcontext(),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            out = model(**inputs)  # (with its default cache: masks need no data-dependent checks)
    finally:
        model.train(was_training)
    return float(sum(kept.values())), int(out.logits.numel())


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
    loss_chunk: int = 1024,
    fast_dropout: bool = True,
) -> Estimate:
    from codepeft.config import ModelSpec
    from codepeft.methods import ApplyContext, count_parameters, get_method
    from codepeft.methods.apply import effective_quantization
    from codepeft.models.builtin import resolve_name
    from codepeft.models.loading import load_config

    if dtype not in BYTES:
        raise CodepeftError(f"dtype must be fp32, bf16 or fp16, not {dtype!r}")
    path = resolve_name(model)
    config = load_config(path)
    m = get_method(method)
    if not m.trains:
        raise CodepeftError(f"{method} is a prompting baseline: it trains nothing (memory is that of inference)")
    options = m.options(method_options or {})
    quant = effective_quantization(m, options, ModelSpec(name_or_path=path, quantization=quantization or "none"))
    meta = _meta_model(config, dtype, attention)
    base_total = sum(p.numel() for p in meta.parameters())
    linear = _linear_params(meta)
    tuned = m.apply(meta, options, ApplyContext(tokenizer_path=path if method == "prompt" else None))
    counts = count_parameters(tuned)
    trainable = int(counts["trainable_params"])
    frozen = base_total if m.family is not MethodFamily.FULL else 0
    width = BYTES[dtype]
    d = _dims(config)

    quantised_on_cpu = quant in ("4bit", "8bit") and device == "cpu"
    if quantised_on_cpu:
        # bitsandbytes' CPU backend, measured: the peak holds the base in the compute dtype beside
        # the quantised copy (4-bit: its NF4 storage; 8-bit: a further copy of 4 bytes a value).
        weights = frozen * width + linear * ((4 + 0.127) / 8 if quant == "4bit" else 4.0)
    elif quant == "4bit":
        weights = linear * (4 + 0.127) / 8 + (frozen - linear) * width
    elif quant == "8bit":
        weights = linear * 1.0 + (frozen - linear) * width + 4 * linear / d["hidden"]
    else:
        weights = frozen * width
    per_param = 4 + (8 if optimizer.startswith("adam") else 2)  # fp32 weight and optimizer state
    state = trainable * per_param

    # Activations: what autograd keeps for the backward pass, traced from one forward pass of
    # the tuned model on the meta device (shapes only, no memory), batch x seq_len tokens.
    fused = attention == "sdpa" and (device == "cuda" or not d["attention_dropout"])
    # On a CPU, `train.fast_dropout` (the default) draws bool dropout masks and trains LoRA
    # layers over plain linear layers with codepeft's kernel (bitsandbytes' layers take peft's
    # forward, which keeps each dropped input); CUDA's dropout keeps bool masks by itself.
    kernel = device == "cpu" and fast_dropout and not quantised_on_cpu
    bool_masks = device == "cuda" or fast_dropout
    saved, logit_values = traced_activations(tuned, batch, seq_len, fused, lora_kernel=kernel, bool_masks=bool_masks)
    if gradient_checkpointing:  # each layer keeps its input; one layer is recomputed at a time
        activations = d["layers"] * batch * seq_len * d["hidden"] * width + saved / d["layers"]
    else:
        activations = saved
    if loss_chunk and not getattr(config, "is_encoder_decoder", False):
        # training's chunked cross-entropy (train.loss_chunk) holds one chunk's fp32 logits,
        # turned into their gradient in place (a half-precision model: its own logits and the
        # gradient in its dtype too)
        logit_values = min(logit_values, loss_chunk * (logit_values // (batch * seq_len)))
        logits = logit_values * (4 + (2 * width if width < 4 else 0))
    else:
        # the loss's backward starts with the fp32 log-softmax (kept), its gradient and the
        # logits' gradient alive together; a half-precision model adds the logits' own gradient
        logits = logit_values * (12 + (width if width < 4 else 0))
    # fp32 master weights and optimizer state are there throughout; gradients grow while the
    # backward pass frees activations, so they count where they outweigh what is freed.
    gradients = max(0.0, 4 * trainable - activations - logits)
    return Estimate(
        model=model,
        method=method,
        total_params=int(counts["total_params"]),
        trainable_params=trainable,
        weights_bytes=float(weights),
        trainable_state_bytes=float(state + gradients),
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
