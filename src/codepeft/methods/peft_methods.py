"""Methods provided by the `peft` library: the studies' named ones and every other peft tuner."""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from peft import (
    IA3Config,
    LoraConfig,
    PeftType,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptLearningConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

from codepeft.errors import CodepeftError
from codepeft.methods.registry import REGISTRY, Method, MethodFamily, dataclass_fields, register_method
from codepeft.models.architectures import architecture_of, check_targets, model_type_of

# Fields peft fills itself or that make no sense to set from a run config.
_INTERNAL = {
    "peft_type",
    "task_type",
    "auto_mapping",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
}
PROMPT_INIT_TEXT = "Generate Python code given a natural language instruction."


def task_type(model: nn.Module) -> TaskType:
    return TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else TaskType.CAUSAL_LM


def _linear_targets(model: nn.Module) -> list[str] | str:
    arch = architecture_of(model_type_of(model))
    return list(arch.linear_targets) if arch else "all-linear"


def _ia3_targets(model: nn.Module) -> dict[str, Any]:
    arch = architecture_of(model_type_of(model))
    if arch is None:
        raise CodepeftError(
            f"no default IA3 targets for a {model_type_of(model)!r} model: set method.target_modules and "
            "method.feedforward_modules"
        )
    return {"target_modules": list(arch.ia3_targets), "feedforward_modules": list(arch.ia3_feedforward)}


def _wrap(model: nn.Module, config, ctx) -> nn.Module:
    if ctx.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ctx.gradient_checkpointing)
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError, KeyError, ImportError, AttributeError) as err:
        raise CodepeftError(
            f"peft could not apply {config.peft_type.value} to this {model_type_of(model)} model: {err}"
        ) from None


def _build(config_cls, model, kwargs) -> Any:
    if "target_modules" in kwargs and kwargs["target_modules"] is not None:
        check_targets(model, kwargs["target_modules"])
    if "feedforward_modules" in kwargs and kwargs["feedforward_modules"] is not None:
        check_targets(model, kwargs["feedforward_modules"], "feedforward_modules")
    try:
        return config_cls(task_type=task_type(model), **kwargs)
    except (ValueError, TypeError) as err:
        raise CodepeftError(f"invalid options for {config_cls.__name__}: {err}") from None


def _options_of(config_cls, extra: set[str] = frozenset()):
    return lambda: (dataclass_fields(config_cls) - _INTERNAL) | set(extra)


def _apply_lora(model, options, ctx):
    kwargs = {k: v for k, v in options.items() if k != "bits"}
    kwargs.setdefault("target_modules", _linear_targets(model))
    return _wrap(model, _build(LoraConfig, model, kwargs), ctx)


def _apply_ia3(model, options, ctx):
    kwargs = dict(options)
    if "target_modules" not in kwargs:
        kwargs.update(_ia3_targets(model))
    return _wrap(model, _build(IA3Config, model, kwargs), ctx)


def _apply_prompt(model, options, ctx):
    kwargs = dict(options)
    init, text = kwargs.pop("init", "random"), kwargs.pop("init_text", PROMPT_INIT_TEXT)
    if init not in ("random", "text"):
        raise CodepeftError(f"prompt tuning init must be 'random' or 'text', got {init!r}")
    if init == "text":
        kwargs.update(prompt_tuning_init="TEXT", prompt_tuning_init_text=text)
        kwargs.setdefault("tokenizer_name_or_path", ctx.tokenizer_path)
    return _wrap(model, _build(PromptTuningConfig, model, kwargs), ctx)


def _simple(config_cls):
    def apply(model, options, ctx):
        return _wrap(model, _build(config_cls, model, dict(options)), ctx)

    return apply


_LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05}
_LORA_STYLE = "low-rank weight deltas"

register_method(
    Method(
        name="lora",
        family=MethodFamily.LORA,
        style=_LORA_STYLE,
        learning_rate=2e-4,
        defaults=dict(_LORA_DEFAULTS),
        apply=_apply_lora,
        option_names=_options_of(LoraConfig),
        mergeable=True,
        quantizable=True,
    )
)
register_method(
    Method(
        name="qlora",
        family=MethodFamily.LORA,
        style="low-rank deltas on a 4-bit NF4 / 8-bit base",
        learning_rate=2e-4,
        defaults={**_LORA_DEFAULTS, "bits": 4},
        apply=_apply_lora,
        option_names=_options_of(LoraConfig, {"bits"}),
        mergeable=True,
        quantizable=True,
        requires_quantization="4bit",
        notes="needs bitsandbytes; method.bits=8 for an 8-bit base",
    )
)
register_method(
    Method(
        name="dora",
        family=MethodFamily.LORA,
        style="magnitude + low-rank direction",
        learning_rate=2e-4,
        defaults={**_LORA_DEFAULTS, "use_dora": True},
        apply=_apply_lora,
        option_names=_options_of(LoraConfig),
        mergeable=True,
        quantizable=True,
    )
)
register_method(
    Method(
        name="ia3",
        family=MethodFamily.IA3,
        style="activation scaling vectors",
        learning_rate=3e-3,
        defaults={},
        apply=_apply_ia3,
        option_names=_options_of(IA3Config),
        mergeable=True,
        quantizable=True,
    )
)
register_method(
    Method(
        name="prompt",
        family=MethodFamily.PROMPT,
        style="virtual token embeddings",
        learning_rate=3e-3,
        defaults={"num_virtual_tokens": 30, "init": "random"},
        apply=_apply_prompt,
        option_names=_options_of(PromptTuningConfig, {"init", "init_text"}),
        quantizable=True,
        notes="method.init=text starts from the embedding of method.init_text",
    )
)
register_method(
    Method(
        name="prefix",
        family=MethodFamily.PROMPT,
        style="key/value prefixes per layer",
        learning_rate=3e-2,
        defaults={"num_virtual_tokens": 10},
        apply=_simple(PrefixTuningConfig),
        option_names=_options_of(PrefixTuningConfig),
        quantizable=True,
        refuses_gradient_checkpointing=True,
        notes="refuses gradient checkpointing; generation needs the KV cache",
    )
)
register_method(
    Method(
        name="ptuning",
        family=MethodFamily.PROMPT,
        style="virtual tokens from an MLP encoder",
        learning_rate=1e-2,
        defaults={"num_virtual_tokens": 30, "encoder_reparameterization_type": "MLP"},
        apply=_simple(PromptEncoderConfig),
        option_names=_options_of(PromptEncoderConfig),
        quantizable=True,
    )
)

# --- every other peft tuner, by its own name -------------------------------------------------------------
_NAMED = {PeftType.LORA, PeftType.IA3, PeftType.PROMPT_TUNING, PeftType.PREFIX_TUNING, PeftType.P_TUNING}
# Tuners that cannot fold their weights into the base model (found by tests/test_methods.py).
_NOT_MERGEABLE = {
    "adaption_prompt",
    "beft",
    "lily",
    "ln_tuning",
    "poly",
    "shadow",
    "trainable_tokens",
    "xlora",
}
# What a generic tuner needs beyond a plain causal-LM batch (shown by `codepeft methods`).
_NEEDS = {
    "adamss": "needs scikit-learn",
    "adaption_prompt": "Llama-family models only",
    "c3a": "method.block_size must divide the layer widths",
    "cartridge": "needs method.num_virtual_tokens and a cartridge initialisation",
    "cpt": "needs CPT-formatted batches; NaN loss on plain causal-LM batches",
    "multitask_prompt_tuning": "needs method.num_tasks and task_ids in every batch",
    "poly": "needs task_ids in every batch",
    "road": "method.group_size must divide the output widths",
    "trainable_tokens": "needs method.token_indices",
    "vblora": "method.vector_length must divide the input widths",
    "xlora": "needs trained LoRA adapters (method.adapters) and use_cache=False",
}


def _has_bnb_layer(peft_type: PeftType) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"peft.tuners.{peft_type.value.lower()}.bnb") is not None


# Tuners whose forward only handles decoder-only models (found by tests/test_methods.py on T5).
_DECODER_ONLY = {"shadow"}


def _generic_apply(peft_type: PeftType):
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = dataclass_fields(config_cls)
    name = peft_type.value.lower()

    def apply(model, options, ctx):
        if name in _DECODER_ONLY and task_type(model) == TaskType.SEQ_2_SEQ_LM:
            raise CodepeftError(
                f"peft's {name} tuner supports decoder-only models only, not this {model_type_of(model)} "
                "encoder-decoder model; use lora, ia3 or an adapter"
            )
        kwargs = dict(options)
        if "total_step" in fields:  # AdaLoRA's rank budget schedule needs the run length
            kwargs.setdefault("total_step", ctx.total_steps)
        try:
            config = _build(config_cls, model, kwargs)
            return _wrap(model, config, ctx)
        except CodepeftError as err:
            # peft knows no default targets for this architecture: fall back to our table.
            if "target_modules" in fields and "target_modules" not in kwargs and "target_modules" in str(err):
                kwargs["target_modules"] = _linear_targets(model)
                return _wrap(model, _build(config_cls, model, kwargs), ctx)
            raise

    return apply


for _ptype in PeftType:
    _name = _ptype.value.lower()
    if _ptype in _NAMED or _name in REGISTRY or _ptype not in PEFT_TYPE_TO_CONFIG_MAPPING:
        continue
    _cls = PEFT_TYPE_TO_CONFIG_MAPPING[_ptype]
    _prompt_like = issubclass(_cls, PromptLearningConfig)
    register_method(
        Method(
            name=_name,
            family=MethodFamily.PROMPT if _prompt_like else MethodFamily.PEFT,
            style=f"peft {_cls.__name__.removesuffix('Config')}",
            learning_rate=3e-3 if _prompt_like else 2e-4,
            defaults={},
            apply=_generic_apply(_ptype),
            option_names=_options_of(_cls),
            mergeable=not _prompt_like and _name not in _NOT_MERGEABLE,
            quantizable=_prompt_like or _has_bnb_layer(_ptype),
            notes=_NEEDS.get(_name, f"options: the fields of peft.{_cls.__name__}"),
        )
    )
