"""Bottleneck adapters (Houlsby, Pfeiffer, parallel) placed at the sublayer level.

`peft` has no bottleneck adapters and AdapterHub's `adapters` package pins an old
transformers and lacks GPTBigCode, so they live here. Each adapter is a child module of the
sublayer it augments (so it is saved, moved and optimised with the model) and is applied by
a forward hook on that sublayer (so the base model's modules and state-dict keys are
untouched). See docs/adapters.md for the placements and how they differ from the
linear-level approximation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from codepeft.errors import CodepeftError
from codepeft.models.architectures import architecture_of, hidden_size_of, model_type_of, sublayers

ADAPTER_ATTR = "codepeft_adapter"
CONFIG_FILE = "codepeft_adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "codepeft-bottleneck/1"

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "silu": nn.SiLU}

# method name -> (sublayers that get an adapter, whether it runs beside the sublayer)
PLACEMENTS = {
    "adapter_houlsby": (("attention", "ffn"), False),  # after attention and after feed-forward
    "adapter_pfeiffer": (("ffn",), False),  # after feed-forward only
    "adapter_parallel": (("ffn",), True),  # beside feed-forward (He et al. 2021)
}


@dataclass
class BottleneckOptions:
    size: int = 256
    activation: str = "tanh"
    scaling: float = 1.0
    dropout: float = 0.0
    zero_init_up: bool = True  # the adapter starts as the identity / a zero branch

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise CodepeftError(f"adapter activation {self.activation!r} unknown; use one of {list(ACTIVATIONS)}")
        if self.size <= 0:
            raise CodepeftError(f"adapter size must be positive, got {self.size}")


class Bottleneck(nn.Module):
    """down-projection -> non-linearity -> up-projection, times a scaling factor.

    Its weights are fp32 whatever the base model's dtype (as peft keeps its adapters), so a bf16
    or 4-bit base trains fp32 adapters; inputs are cast to them and outputs back."""

    def __init__(self, dim: int, opts: BottleneckOptions):
        super().__init__()
        self.down = nn.Linear(dim, opts.size)
        self.act = ACTIVATIONS[opts.activation]()
        self.dropout = nn.Dropout(opts.dropout)
        self.up = nn.Linear(opts.size, dim)
        self.scaling = opts.scaling
        if opts.zero_init_up:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.dropout(self.act(self.down(x.to(self.down.weight.dtype))))) * self.scaling
        return out.to(x.dtype)


def _first_tensor(value):
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value, tensor):
    return (tensor, *value[1:]) if isinstance(value, tuple) else tensor


def _sequential_hook(module, args, kwargs, output):
    hidden = _first_tensor(output)
    adapter = getattr(module, ADAPTER_ATTR)
    return _replace_first(output, hidden + adapter(hidden))


def _parallel_hook(module, args, kwargs, output):
    x = args[0] if args else kwargs["hidden_states"]
    hidden = _first_tensor(output)
    adapter = getattr(module, ADAPTER_ATTR)
    return _replace_first(output, hidden + adapter(x).to(hidden.dtype))


def adapter_sites(model: nn.Module, method: str) -> list[tuple[str, nn.Module]]:
    mtype = model_type_of(model)
    arch = architecture_of(mtype)
    if arch is None:
        raise CodepeftError(
            f"bottleneck adapters need to know where the sublayers of a {mtype!r} model are; "
            "supported: gpt_bigcode, starcoder2, llama, mistral, qwen2, codegen, gpt2, gpt_neox, t5 "
            "(add a row to codepeft/models/architectures.py), or use lora"
        )
    where, _ = PLACEMENTS[method]
    sites = []
    for kind in where:
        pattern = arch.attention_sublayer if kind == "attention" else arch.ffn_sublayer
        found = sublayers(model, pattern)
        if not found:
            raise CodepeftError(f"no {kind} sublayer matching {pattern!r} in this {mtype} model")
        sites.extend(found)
    return sorted(sites, key=lambda s: s[0])


def add_bottleneck_adapters(model: nn.Module, method: str, opts: BottleneckOptions) -> nn.Module:
    """Freeze the model and attach adapters in place; returns the same model."""
    if method not in PLACEMENTS:
        raise CodepeftError(f"{method!r} is not a bottleneck adapter method")
    dim = hidden_size_of(model.config)
    parallel = PLACEMENTS[method][1]
    for p in model.parameters():
        p.requires_grad_(False)
    ref = next(model.parameters())
    for _, module in adapter_sites(model, method):
        if hasattr(module, ADAPTER_ATTR):
            raise CodepeftError("this model already has bottleneck adapters")
        module.add_module(ADAPTER_ATTR, Bottleneck(dim, opts).to(device=ref.device))
        module.register_forward_hook(_parallel_hook if parallel else _sequential_hook, with_kwargs=True)
    model.codepeft_bottleneck = {"method": method, "options": asdict(opts)}
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    marker = f".{ADAPTER_ATTR}."
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if marker in k}


def save_bottleneck(model: nn.Module, out_dir: str | Path, base_model: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = dict(model.codepeft_bottleneck)
    state = adapter_state_dict(model)
    meta = {"format": FORMAT, "base_model_name_or_path": base_model, **info, "parameters": sorted(state)}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    save_file(state, str(out / WEIGHTS_FILE))
    return out


def is_bottleneck_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_bottleneck(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Attach the adapters described in `adapter_dir` to a freshly loaded base model."""
    adapter_dir = Path(adapter_dir)
    meta = json.loads((adapter_dir / CONFIG_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise CodepeftError(f"{adapter_dir / CONFIG_FILE}: unknown adapter format {meta.get('format')!r}")
    add_bottleneck_adapters(model, meta["method"], BottleneckOptions(**meta["options"]))
    state = load_file(str(adapter_dir / WEIGHTS_FILE))
    expected = set(adapter_state_dict(model))
    if set(state) != expected:
        raise CodepeftError(
            f"{adapter_dir}: adapter weights do not fit this base model "
            f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})"
        )
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    return model
