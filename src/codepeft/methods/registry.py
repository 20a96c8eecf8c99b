"""One registry of tuning methods: name -> how to apply it, its defaults and its limits.

Named entries cover the methods the two studies use; every other tuner of the installed
`peft` library is added under its own lower-case name with its keyword arguments passed
through, so a new peft release brings its methods without a code change here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from codepeft.errors import CodepeftError, did_you_mean
from codepeft.families import ZERO_SHOT, MethodFamily


@dataclass
class ApplyContext:
    """What a method may need besides the model: the tokenizer path (prompt text init), the
    number of training steps (AdaLoRA's schedule) and whether gradient checkpointing is on."""

    tokenizer_path: str | None = None
    total_steps: int = 100
    gradient_checkpointing: bool = False
    quantized: bool = False


@dataclass(kw_only=True)
class Method:
    """A registry entry. `apply(model, options, ctx)` returns the model with the method applied
    (trainable parameters marked); None for a method that trains nothing (a prompting baseline)."""

    name: str
    family: MethodFamily
    style: str  # what is trained, in words
    learning_rate: float
    defaults: dict[str, Any]
    apply: Callable[[nn.Module, dict[str, Any], ApplyContext], nn.Module] | None
    option_names: Callable[[], set[str]]
    mergeable: bool = False
    quantizable: bool = False
    requires_quantization: str | None = None  # "4bit" for qlora
    refuses_gradient_checkpointing: bool = False
    notes: str = ""

    def __post_init__(self):
        self.family = MethodFamily(self.family)

    @property
    def trains(self) -> bool:
        return self.apply is not None

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the user's options; unknown names are refused."""
        allowed = self.option_names()
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise CodepeftError(
                f"unknown option(s) {unknown} for method {self.name!r}; valid options: {', '.join(sorted(allowed))}"
            )
        return {**self.defaults, **given}


REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method under its name; a name already taken is refused (nothing is silently replaced)."""
    if method.name in REGISTRY or method.name == ZERO_SHOT:
        raise CodepeftError(f"method {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def _ensure_loaded() -> None:
    # Registration happens on import of the modules that define methods.
    from codepeft.methods import adapters, baselines, full, peft_methods  # noqa: F401


def get_method(name: str) -> Method:
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTRY:
        hint = did_you_mean(key, REGISTRY)
        raise CodepeftError(f"unknown method {name!r}{hint}; known methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def all_methods() -> list[Method]:
    _ensure_loaded()
    order = list(MethodFamily)
    return sorted(REGISTRY.values(), key=lambda m: (order.index(m.family), m.name))


def dataclass_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None
