"""Typed, validated run configuration read from YAML, with `--set key=value` overrides.

Every unknown key is an error naming the key and the file, because a silently ignored
typo in a hyper-parameter is the most expensive kind of bug in a study.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from codepeft.errors import CodepeftError, did_you_mean


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(_Strict):
    """Which model to load and how."""

    name_or_path: str = "default"  # "default" = the offline StarCoder-architecture model (codepeft bootstrap)
    # auto: bf16 where the device runs it fast (a GPU with bf16, a CPU with AVX512_BF16 or AMX),
    # fp32 elsewhere (codepeft.models.hardware); run.json records the choice and why.
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quantization: Literal["none", "4bit", "8bit"] = "none"
    trust_remote_code: bool = False
    revision: str | None = None


class MethodSpec(BaseModel):
    """A tuning method by registry name; every other key is that method's own option.

    Options are checked against the method when it is applied (`codepeft methods` lists them),
    so `method.r=16` for LoRA works and `method.rr=16` is refused with the valid names.
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str = "lora"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DatasetSpec(_Strict):
    """One training source: a built-in name, a local file (.jsonl/.json/.parquet) or a hub id."""

    source: str
    split: str = "train"
    eval_split: str | None = "valid"
    fields: dict[str, str] | None = None  # our field name -> the file's field name
    data_files: str | None = None  # a built-in dataset read from a local copy in its real schema
    weight: float = Field(1.0, gt=0)
    limit: int | None = Field(None, gt=0)
    subset: str | None = None


class DataSpec(_Strict):
    train: list[DatasetSpec] = Field(default_factory=lambda: [DatasetSpec(source="stdlib-instruct")])
    format: Literal["octocoder", "alpaca", "chat", "plain"] = "octocoder"
    loss_on: Literal["response", "all"] = "response"
    max_length: int = Field(512, gt=8)
    # "batch" (default): the examples of each batch are laid end to end in one row, with no
    # padding and no attention across them (the same examples per step as padding, so the
    # same loss curve); true: examples packed greedily into rows of max_length (more examples
    # per step); false: each batch padded to its longest example.
    packing: bool | Literal["batch"] = "batch"
    # Held-out examples scored for the eval loss, per source (None: all; 0: no held-out
    # evaluation; the held-out split stays out of training either way, so what a run trains on
    # does not depend on whether it is evaluated).
    eval_limit: int | None = Field(256, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _one_source_shorthand(cls, value: Any) -> Any:
        # `data.train: stdlib-instruct` is accepted as a shorthand for one source.
        if isinstance(value, dict) and isinstance(value.get("train"), str | dict):
            train = value["train"]
            value = {**value, "train": [{"source": train} if isinstance(train, str) else train]}
        return value


class TrainSpec(_Strict):
    max_steps: int = 50
    epochs: float = 1.0  # used only when max_steps <= 0
    batch_size: int = Field(8, gt=0)
    eval_batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    learning_rate: float | None = None  # None = the method's default
    lr_scheduler: str = "cosine"
    warmup: float = 0.06  # < 1: a ratio of the steps, >= 1: a number of steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Stop when the gradient norm exceeds this many times the median of the last 50 steps
    # (exploding gradients); null turns the check off. NaN / inf always stops.
    explode_factor: float | None = Field(default=1000.0, gt=1)
    optimizer: str = "adamw_torch"
    # auto: bf16 autocast when the model's dtype resolves to bf16 (trainable weights then stay
    # fp32, so small updates are not rounded away), none otherwise.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    # Draw CPU dropout masks 64 bits at a time (codepeft.training.dropout) instead of torch's
    # one-call-per-element generator, and compute LoRA layers' dropout and update in one node
    # (codepeft.training.lora_kernel); false gives torch's dropout and peft's forward. CPU only.
    fast_dropout: bool = True
    # Cross-entropy over this many target tokens at a time, each chunk's gradient computed with
    # its logits and no logits kept for the backward pass (decoder-only models): peak memory
    # stops growing with vocabulary x tokens. 0: the model's own loss, every logit at once.
    loss_chunk: int = Field(1024, ge=0)
    logging_steps: int = Field(5, gt=0)
    eval_steps: int = Field(25, gt=0)
    save_steps: int = Field(25, gt=0)
    save_total_limit: int | None = 2
    report_to: list[str] = Field(default_factory=list)  # e.g. ["tensorboard"]
    num_workers: int = 0


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    model: ModelSpec = Field(default_factory=ModelSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)


def parse_scalar(text: str) -> Any:
    # YAML rules, so `--set train.max_steps=50` gives an int and `--set model.quantization=4bit` a string.
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict (a new one is returned)."""
    result: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise CodepeftError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = result
        for part in parts[:-1]:
            node = _child(node, part, key)
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = parse_scalar(value)
        else:
            node[last] = parse_scalar(value)
    return result


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise CodepeftError(f"--set {key}: '{part}' is not an index of a list of {len(node)}")
    return int(part)


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    child = node.setdefault(part, {})
    if not isinstance(child, dict | list):
        raise CodepeftError(f"--set {key}: '{part}' is a value, not a section")
    return child


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at `loc` inside `model` (list indices and unions are looked through)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        inner = [a for a in _leaves(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _leaves(annotation) -> list:
    args = typing.get_args(annotation)
    return [leaf for a in args for leaf in _leaves(a)] if args else [annotation]


def format_errors(err: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    model = model or RunConfig
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(e["loc"][-1], _fields_at(model, tuple(e["loc"][:-1])))
            lines.append(f"unknown config key '{key}'{hint}")
        else:
            lines.append(f"'{key}': {e['msg']}")
    return f"invalid config {where}:\n  " + "\n  ".join(lines)


def parse_config(raw: dict[str, Any], where: str = "(inline)") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise CodepeftError(format_errors(err, where)) from None


def read_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping from a file, with errors that name the file."""
    if not path.is_file():
        raise CodepeftError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise CodepeftError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise CodepeftError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when path is None) and apply overrides."""
    raw: dict[str, Any] = {}
    where = "(defaults)"
    if path is not None:
        where = str(path)
        raw = read_yaml(Path(path))
    config = parse_config(raw, where)
    if not overrides:
        return config
    # Overrides apply to the resolved config, so defaults (lists included) can be addressed.
    resolved = config.model_dump(mode="json")
    return parse_config(apply_overrides(resolved, overrides), f"{where} with --set {' '.join(overrides)}")
