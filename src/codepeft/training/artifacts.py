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
