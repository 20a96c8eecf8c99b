"""A study: models x methods x training datasets x seeds, each cell trained (unless the method is a
prompting baseline or zero-shot), evaluated on the study's tasks, and recorded in one store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from codepeft.config import DatasetSpec, DataSpec, ModelSpec, TrainSpec, apply_overrides, format_errors, read_yaml
from codepeft.errors import CodepeftError
from codepeft.families import ZERO_SHOT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StudyModel(ModelSpec):
    """A model of the grid; `label` names it in the report, `size` orders a scale axis."""

    label: str | None = None
    size: float | None = None  # parameters; None = counted when the model is loaded

    @property
    def name(self) -> str:
        return self.label or Path(self.name_or_path).name


# A method's loading settings for the base model: every ModelSpec field but the model itself.
ModelOverrides = create_model(
    "ModelOverrides",
    __config__=ConfigDict(extra="forbid", protected_namespaces=()),
    **{n: (f.annotation | None, None) for n, f in ModelSpec.model_fields.items() if n != "name_or_path"},
)


class StudyMethod(BaseModel):
    """A method of the registry (tuning or baseline) or `zero-shot`; other keys are its options.
    `label` names it in the report; `train` overrides the study's training settings for it;
    `model` overrides how the base model is loaded for it (Astraios tuned every PEFT method on an
    8-bit base: `model: {quantization: 8bit}`); `models` restricts it to those model labels
    (full fine-tuning of the small models only, as Weyssow et al. did)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str
    label: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    model: ModelOverrides = Field(default_factory=lambda: ModelOverrides())
    models: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"name": data} if isinstance(data, str) else data  # `methods: [lora, ia3]`

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def display(self) -> str:
        return self.label or self.name


class StudyDataset(_Strict):
    """A training set of the grid: one source, or several trained jointly (weights mix them).
    `tasks` adds tasks evaluated only for cells trained on this set."""

    name: str
    train: list[DatasetSpec]
    tasks: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):  # `- stdlib-instruct`
            return {"name": value, "train": [{"source": value}]}
        if isinstance(value, dict) and isinstance(value.get("train"), str | dict):
            train = value["train"]
            value = {**value, "train": [{"source": train} if isinstance(train, str) else train]}
        return value


class StudyEval(_Strict):
    tasks: list[str] = Field(default_factory=lambda: ["stdlib-instruct-loss"])
    n: int = Field(1, gt=0)
    temperature: float = 0.0
    top_p: float = 0.95
    k: list[int] = Field(default_factory=lambda: [1])
    limit: int | None = Field(None, gt=0)
    limits: dict[str, int] = Field(default_factory=dict)  # per task, instead of `limit`: {humaneval: 20}
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(8, gt=0)
    prompt_format: str | None = None
    task_data: dict[str, str] = Field(default_factory=dict)
    sandbox_workers: int = Field(2, gt=0)
    # How generated programs are isolated (codepeft.execution.levels.study_isolation): auto needs
    # bubblewrap where it works or can be installed; rlimits accepts the weaker level.
    isolation: Literal["auto", "bwrap", "rlimits"] = "auto"
    # Evaluate the cells of one base model in one worker after they are trained: the base and its
    # LoRA adapters in shared mixed-adapter batches (codepeft.study.together); the same results
    # as one worker per cell, faster. false: each cell is evaluated in its worker right after training.
    together: bool = True

    @model_validator(mode="after")
    def _limits_name_tasks(self):
        unknown = sorted(set(self.limits) - set(self.tasks))
        if unknown:
            raise ValueError(f"eval.limits names tasks not in eval.tasks: {', '.join(unknown)}")
        if bad := sorted(t for t, n in self.limits.items() if n < 1):
            raise ValueError(f"eval.limits must be positive numbers of problems: {', '.join(bad)}")
        return self


class StudyBackend(_Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(1, gt=0)  # cells run at once
    gpus_per_cell: float = 0.0  # Ray resource request; 0 on CPU
    cpus_per_cell: float = 1.0
    address: str | None = None  # Ray cluster address; None starts a local instance
    # Train each cell under `accelerate launch` with these arguments (several GPUs for one cell),
    # e.g. ["--multi_gpu", "--num_processes", "4"]; None trains in the cell's own process.
    accelerate: list[str] | None = None


class StudyConfig(_Strict):
    name: str
    output_dir: str | None = None  # default: studies/<name>
    models: list[StudyModel]
    methods: list[StudyMethod]
    datasets: list[StudyDataset]
    seeds: list[int] = Field(default_factory=lambda: [0])
    data: DataSpec = Field(default_factory=DataSpec)  # format, lengths, packing (its `train` is set per dataset)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: StudyEval = Field(default_factory=StudyEval)
    backend: StudyBackend = Field(default_factory=StudyBackend)

    @model_validator(mode="after")
    def _method_models_exist(self):
        labels = {m.name for m in self.models}
        for method in self.methods:
            if unknown := sorted(set(method.models or []) - labels):
                raise ValueError(f"method {method.display!r} names models not in the study: {', '.join(unknown)}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_data_train(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("data"), dict) and "train" in value["data"]:
            raise ValueError("training data goes under `datasets` (one entry per training set), not data.train")
        return value

    @model_validator(mode="after")
    def _unique_labels(self):
        for what, names in (
            ("model", [m.name for m in self.models]),
            ("method", [m.display for m in self.methods]),
            ("dataset", [d.name for d in self.datasets]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"two {what}s share the label(s) {dupes}: give each a distinct `label`")
        return self

    @property
    def directory(self) -> Path:
        return Path(self.output_dir or Path("studies") / self.name)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    path = Path(path)
    raw = read_yaml(path, "study config")
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as err:
        message = format_errors(err, str(path), StudyConfig)
        raise CodepeftError(message.replace("invalid config", "invalid study config")) from None
    _check_names(config, path)
    return config


def _check_names(config: StudyConfig, path: Path) -> None:
    """Unknown methods, options and tasks fail before any cell runs."""
    from codepeft.methods import get_method
    from codepeft.tasks import get_task

    for m in config.methods:
        if m.name == ZERO_SHOT:
            continue
        try:
            get_method(m.name).options(m.options)
        except CodepeftError as err:
            raise CodepeftError(f"{path}: methods[{m.display}]: {err}") from None
        try:
            TrainSpec.model_validate({**config.train.model_dump(), **m.train})
        except ValidationError as err:
            raise CodepeftError(format_errors(err, f"{path} methods[{m.display}].train", TrainSpec)) from None
    from codepeft.data import get_builtin
    from codepeft.data.records import FILE_SUFFIXES

    for d in config.datasets:
        for spec in d.train:
            looks_like_file = spec.source.lower().endswith(FILE_SUFFIXES)
            if looks_like_file and get_builtin(spec.source) is None and not Path(spec.source).exists():
                raise CodepeftError(f"{path}: datasets[{d.name}]: data file not found: {spec.source}")
    for name in {t for d in config.datasets for t in d.tasks} | set(config.eval.tasks):
        try:
            get_task(name, config.eval.task_data.get(name))
        except CodepeftError as err:
            raise CodepeftError(f"{path}: {err}") from None
