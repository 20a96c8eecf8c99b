"""One table of per-architecture facts: where LoRA-style targets, IA3 feed-forward layers and
the attention / feed-forward sublayers live. Everything that needs module names reads it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from codepeft.errors import CodepeftError


@dataclass(frozen=True)
class Architecture:
    linear_targets: tuple[str, ...]  # attention + feed-forward projections (LoRA family)
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    attention_sublayer: str  # regex on full module names: the self-attention sublayer
    ffn_sublayer: str  # regex: the feed-forward sublayer
    encoder_decoder: bool = False


_GPT_STYLE = dict(attention_sublayer=r"(^|\.)h\.\d+\.attn$", ffn_sublayer=r"(^|\.)h\.\d+\.mlp$")
_LLAMA_STYLE = dict(
    linear_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    ia3_targets=("k_proj", "v_proj", "down_proj"),
    ia3_feedforward=("down_proj",),
    attention_sublayer=r"layers\.\d+\.self_attn$",
    ffn_sublayer=r"layers\.\d+\.mlp$",
)

ARCHITECTURES: dict[str, Architecture] = {
    # StarCoder / SantaCoder: fused c_attn (multi-query), c_proj in both attention and MLP.
    "gpt_bigcode": Architecture(
        linear_targets=("c_attn", "c_proj", "c_fc"),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        **_GPT_STYLE,
    ),
    "gpt2": Architecture(
        linear_targets=("c_attn", "c_proj", "c_fc"),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        **_GPT_STYLE,
    ),
    "starcoder2": Architecture(
        linear_targets=("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
        ia3_targets=("k_proj", "v_proj", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        attention_sublayer=r"layers\.\d+\.self_attn$",
        ffn_sublayer=r"layers\.\d+\.mlp$",
    ),
    "llama": Architecture(**_LLAMA_STYLE),
    "mistral": Architecture(**_LLAMA_STYLE),
    "qwen2": Architecture(**_LLAMA_STYLE),
    "codegen": Architecture(
        linear_targets=("qkv_proj", "out_proj", "fc_in", "fc_out"),
        ia3_targets=("qkv_proj", "fc_out"),
        ia3_feedforward=("fc_out",),
        **_GPT_STYLE,
    ),
    "gpt_neox": Architecture(
        linear_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        ia3_targets=("query_key_value", "dense_4h_to_h"),
        ia3_feedforward=("dense_4h_to_h",),
        attention_sublayer=r"layers\.\d+\.attention$",
        ffn_sublayer=r"layers\.\d+\.mlp$",
    ),
    # T5 / CodeT5+ (220M, 770M): sublayers sit inside T5LayerSelfAttention / T5LayerFF.
    "t5": Architecture(
        linear_targets=("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"),
        ia3_targets=("k", "v", "wo"),
        ia3_feedforward=("wo",),
        attention_sublayer=r"block\.\d+\.layer\.0\.SelfAttention$",
        ffn_sublayer=r"block\.\d+\.layer\.\d+\.DenseReluDense$",
        encoder_decoder=True,
    ),
}


def architecture_of(model_type: str) -> Architecture | None:
    return ARCHITECTURES.get(model_type)


def model_type_of(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "unknown")


def leaf_module_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the model's weight-bearing leaf modules (what targets can name)."""
    names = set()
    for name, module in model.named_modules():
        if name and not list(module.children()) and any(True for _ in module.parameters(recurse=False)):
            names.add(name.split(".")[-1])
    return sorted(names)


def target_matches(module_name: str, target: str) -> bool:
    # Same rule as peft: the full name equals the target or ends with ".<target>".
    return module_name == target or module_name.endswith("." + target)


def check_targets(model: nn.Module, targets: list[str] | str, option: str = "target_modules") -> None:
    """Refuse targets that match no module, listing the names the model has."""
    if isinstance(targets, str):  # a regex or "all-linear": peft resolves it
        if targets == "all-linear":
            return
        matched = any(re.fullmatch(targets, n) for n, _ in model.named_modules())
        missing = [] if matched else [targets]
    else:
        names = [n for n, _ in model.named_modules()]
        missing = [t for t in targets if not any(target_matches(n, t) for n in names)]
        if len(missing) < len(targets):
            return  # peft needs at least one match; extra names in a per-family list are normal
    if missing:
        raise CodepeftError(
            f"{option} {missing} match no module of this {model_type_of(model)} model. "
            f"Its weight-bearing modules are named: {', '.join(leaf_module_names(model))}"
        )


def sublayers(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    regex = re.compile(pattern)
    return [(n, m) for n, m in model.named_modules() if regex.search(n)]


def hidden_size_of(config) -> int:
    for attr in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise CodepeftError(f"cannot tell the hidden size of a {config.model_type} model")
