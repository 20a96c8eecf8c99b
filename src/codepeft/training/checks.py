"""`check(config)`: every rule that spans more than one config field, before any weight loads.

Each rule is a small function that raises `CodepeftError`; `check` runs them all and reports
every problem it found in one error (a user fixes them in one edit, not one per run). What it
needs besides the config is read cheaply: the method's registry entry and the model's config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codepeft.config import RunConfig
from codepeft.data.builtin import get_builtin
from codepeft.data.records import FILE_SUFFIXES
from codepeft.errors import CodepeftError
from codepeft.families import MethodFamily
from codepeft.methods.apply import check_combination
from codepeft.methods.registry import Method, get_method
from codepeft.models.builtin import resolve_name
from codepeft.models.hardware import resolve_dtype
from codepeft.models.loading import context_limit, load_config, resolve_device


@dataclass
class CheckedRun:
    """What the checks resolved, for the steps of `train` to use as it is."""

    method: Method
    options: dict[str, Any]
    quantization: str  # none | 4bit | 8bit, as the run really uses it
    precision: dict  # dtype, reason, weights, autocast
    base_path: str  # the model's local path or hub id ('default' resolved)
    model_config: Any  # the model's transformers config


def check(config: RunConfig, recorded_precision: dict | None = None) -> CheckedRun:
    """Check the whole run config; raises one `CodepeftError` naming every problem found."""
    problems: list[str] = []

    def rule(step, *args):
        try:
            return step(*args)
        except CodepeftError as err:
            problems.append(str(err))
            return None

    method = rule(get_method, config.method.name)
    options = rule(method.options, config.method.options) if method else None
    quant = rule(check_combination, method, options, config.model, config.train) if options is not None else None
    if method is not None:
        rule(_packing_with_virtual_tokens, config, method)
    precision = recorded_precision or rule(_precision, config, method.family if method else MethodFamily.LORA)
    for source in config.data.train:
        rule(_data_source, source)
    base_path = rule(resolve_name, config.model.name_or_path)
    model_config = rule(load_config, base_path, config.model) if base_path else None
    if model_config is not None:
        rule(_fits_context, config, model_config)
        rule(_packing_on_encoder_decoder, config, model_config)
    if problems:
        if len(problems) == 1:
            raise CodepeftError(problems[0])
        raise CodepeftError(f"the run config has {len(problems)} problems:\n  - " + "\n  - ".join(problems))
    return CheckedRun(method, options, quant, precision, base_path, model_config)


def _autocast(mode: str, dtype: str, device: str) -> str | None:
    """The autocast dtype of training (None: none); `auto` follows the model's resolved dtype."""
    if mode == "auto":
        return "bf16" if dtype == "bf16" else None
    if device == "cpu" and mode == "fp16":
        raise CodepeftError("train.mixed_precision=fp16 needs a GPU; use no (fp32) or bf16 on CPU")
    return None if mode == "no" else mode


def _precision(config: RunConfig, family: MethodFamily) -> dict:
    """What dtype the weights load in and what autocast training uses, with the reason.

    Under autocast the trainable weights stay fp32 (the master weights that small updates are
    added to), as Trainer's mixed precision expects: full fine-tuning loads fp32 weights, and
    adapters are fp32 whatever the base's dtype."""
    device = resolve_device(config.model.device)
    dtype, reason = resolve_dtype(config.model.dtype, device)
    autocast = _autocast(config.train.mixed_precision, dtype, device)
    weights = "fp32" if autocast and family is MethodFamily.FULL else dtype
    return {"dtype": dtype, "reason": reason, "weights": weights, "autocast": autocast or "none"}


def _packing_with_virtual_tokens(config: RunConfig, method: Method) -> None:
    if config.data.packing is True and method.family is MethodFamily.PROMPT:
        raise CodepeftError(
            f"data.packing cannot be used with {method.name}: peft drops position ids for virtual-token "
            "methods, so packed examples would attend to each other. Set data.packing=false."
        )


def _data_source(source) -> None:
    if get_builtin(source.source) is not None:
        if source.fields:
            raise CodepeftError(f"data source {source.source!r} is built in; its fields are known (drop 'fields')")
        return
    if source.source.lower().endswith(FILE_SUFFIXES) and not Path(source.source).exists():
        raise CodepeftError(f"data file not found: {source.source}")


def _fits_context(config: RunConfig, model_config) -> None:
    limit = context_limit(model_config)
    if limit is not None and config.data.max_length > limit:
        raise CodepeftError(
            f"data.max_length={config.data.max_length} is above the {limit} positions the model "
            f"{config.model.name_or_path!r} can attend over; set data.max_length to at most {limit}"
        )


def _packing_on_encoder_decoder(config: RunConfig, model_config) -> None:
    if config.data.packing is True and getattr(model_config, "is_encoder_decoder", False):
        raise CodepeftError("data.packing is for decoder-only models; an encoder-decoder model reads one example")
