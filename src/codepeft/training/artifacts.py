"""Saving tuned weights in the standard formats and loading a finished run back."""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel

from codepeft.config import ModelSpec
from codepeft.errors import CodepeftError
from codepeft.methods.bottleneck import is_bottleneck_dir, load_bottleneck, save_bottleneck

ADAPTER_DIR, MODEL_DIR = "adapter", "model"


def save_weights(model, tokenizer, run_dir: Path, method_family: str, base_path: str) -> Path:
    """PEFT adapter (adapter/), bottleneck adapter (adapter/), or full weights (model/)."""
    if method_family == "full":
        out = run_dir / MODEL_DIR
        model.save_pretrained(out)
    elif isinstance(model, PeftModel):
        out = run_dir / ADAPTER_DIR
        model.save_pretrained(out)
    else:
        out = save_bottleneck(model, run_dir / ADAPTER_DIR, base_path)
    tokenizer.save_pretrained(out)
    return out


def load_run(run_dir: str | Path, device: str = "auto"):
    """(model, tokenizer, run_info) of a finished run, ready for generation (eval mode)."""
    from codepeft.models.loading import load_model

    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise CodepeftError(f"{run_dir} is not a codepeft run directory (no run.json)")
    info = json.loads(info_path.read_text())
    if info.get("status") != "completed":
        raise CodepeftError(f"run {run_dir} did not complete (status: {info.get('status')}); resume it first")
    spec = ModelSpec(**{**info["config"]["model"], "device": device})
    spec.quantization = info.get("quantization", spec.quantization)
    if (run_dir / MODEL_DIR).is_dir():
        spec.name_or_path = str(run_dir / MODEL_DIR)
        model, tok = load_model(spec)
    else:
        spec.name_or_path = info["base_model"]
        model, tok = load_model(spec)
        adapter = run_dir / ADAPTER_DIR
        model = (
            load_bottleneck(model, adapter) if is_bottleneck_dir(adapter) else PeftModel.from_pretrained(model, adapter)
        )
    model.eval()
    return model, tok, info


def _complete(checkpoint: Path) -> bool:
    # Trainer writes the weights and optimizer first and trainer_state.json after them, so a
    # checkpoint cut short by a kill lacks the state file or a part written before it.
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    weights = any(checkpoint.glob("*.safetensors")) or any(checkpoint.glob("*model*.bin"))
    step = int(checkpoint.name.rsplit("-", 1)[1])
    return weights and (checkpoint / "optimizer.pt").is_file() and state.get("global_step") == step


def last_good_checkpoint(directory: str | Path) -> str | None:
    """The newest complete Trainer checkpoint in `directory`. Incomplete ones (the process was
    killed while saving) are renamed `incomplete-checkpoint-N`, kept for inspection and never
    resumed from."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")]
    found = [p for p in found if p.name.split("-", 1)[1].isdigit()]
    for checkpoint in sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        if _complete(checkpoint):
            return str(checkpoint)
        checkpoint.rename(checkpoint.with_name(f"incomplete-{checkpoint.name}"))
    return None
