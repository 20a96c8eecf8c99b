"""Load any Hugging Face causal or encoder-decoder LM by hub id or local directory."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from codepeft.config import ModelSpec
from codepeft.errors import CodepeftError
from codepeft.models.builtin import resolve_name
from codepeft.models.hardware import resolve_dtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CodepeftError("model.device is 'cuda' but no CUDA GPU is visible; use model.device=cpu or auto")
    return device


def context_limit(config) -> int | None:
    """How many positions the model can attend over (None: no fixed limit, as in T5)."""
    for attr in ("n_positions", "max_position_embeddings"):
        if isinstance(value := getattr(config, attr, None), int):
            return value
    return None


def load_config(name_or_path: str, spec: ModelSpec | None = None):
    spec = spec or ModelSpec(name_or_path=name_or_path)
    looks_local = name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1
    if looks_local and not Path(name_or_path).expanduser().exists():  # not a hub id: say so plainly
        raise CodepeftError(f"model directory not found: {name_or_path}")
    try:
        return AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=spec.trust_remote_code, revision=spec.revision
        )
    except (OSError, ValueError) as err:
        local = Path(name_or_path).exists()
        why = (
            "the directory holds no usable config.json"
            if local
            else (
                "it is not a local directory and the model hub could not provide it "
                "(offline, a typo, or a gated model without a token)"
            )
        )
        raise CodepeftError(f"cannot load model {name_or_path!r}: {why}. Detail: {err}") from None


def quantization_config(kind: str, compute_dtype: torch.dtype):
    """bitsandbytes settings: NF4 with double quantisation (QLoRA), or LLM.int8()."""
    if kind == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CodepeftError(
            f"model.quantization={kind} needs the bitsandbytes package: pip install 'codepeft[quant]' "
            "(or use model.quantization=none)"
        )
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_tokenizer(name_or_path: str, spec: ModelSpec | None = None):
    spec = spec or ModelSpec(name_or_path=name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=spec.trust_remote_code, revision=spec.revision
        )
    except (OSError, ValueError) as err:
        raise CodepeftError(f"cannot load the tokenizer of {name_or_path!r}: {err}") from None
    if tok.pad_token is None:  # Llama / StarCoder tokenizers ship none; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec):
    """Return (model, tokenizer) for a ModelSpec; errors a user can cause are CodepeftError."""
    name = resolve_name(spec.name_or_path)
    config = load_config(name, spec)
    device = resolve_device(spec.device)
    dtype = DTYPES[resolve_dtype(spec.dtype, device)[0]]
    quant = quantization_config(spec.quantization, dtype)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    kwargs = dict(dtype=dtype, trust_remote_code=spec.trust_remote_code, revision=spec.revision)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = auto.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise CodepeftError(f"cannot load model weights of {name!r}: {err}") from None
    if quant is None:
        model.to(device)
    elif spec.quantization == "4bit":
        keep_4bit_layout(model)
    if spec.quantization == "8bit":
        # bitsandbytes warns on every int8 matmul that inputs are cast; once is enough.
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    return model, load_tokenizer(name, spec)


def keep_4bit_layout(model) -> int:
    """Keep every bitsandbytes 4-bit layer on its one, exact path; returns how many layers.

    On CPUs with AVX512_BF16, bitsandbytes' `Linear4bit.forward` rewrites a layer's weight
    into a CPU-specific layout the first time it runs in eval mode without gradients: the
    quantisation scales (`absmax`) are rounded to bf16, the state's dtype becomes bf16, and the
    matmul computes in bf16 whatever the compute dtype is. Saving converts back by quantising
    the rounded scales again. So a QLoRA model trained and evaluated on such a CPU was not the
    model that reloads from its files (logits differ by ~2e-3 on tiny models), and results
    depended on the instruction set. The flag below is the switch bitsandbytes reads
    (`support_avx512bf16_for_cpu`); turned off, every CPU runs the dequantise-and-matmul path
    in the configured compute dtype, as the AVX2 machines always did.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def base_model(model):
    """The transformers model under a peft wrapper (the model itself when unwrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Run the block with the model's attention set to `name` (registered with transformers'
    AttentionInterface); the model's own implementation is restored afterwards."""
    base = base_model(model)
    before = base.config._attn_implementation
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
