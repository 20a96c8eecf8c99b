"""Saving tuned weights in the standard formats and loading a finished run back."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zipfile
from pathlib import Path

from peft import PeftModel

from codepeft.config import ModelSpec
from codepeft.errors import CodepeftError
from codepeft.families import MethodFamily
from codepeft.methods.bottleneck import is_bottleneck_dir, load_bottleneck, save_bottleneck

ADAPTER_DIR, MODEL_DIR = "adapter", "model"
log = logging.getLogger(__name__)


def save_weights(model, tokenizer, run_dir: Path, method_family: MethodFamily, base_path: str) -> Path:
    """PEFT adapter (adapter/), bottleneck adapter (adapter/), or full weights (model/)."""
    if method_family is MethodFamily.FULL:
        out = run_dir / MODEL_DIR
        model.save_pretrained(out)
    elif isinstance(model, PeftModel):
        out = run_dir / ADAPTER_DIR
        model.save_pretrained(out)
    else:
        out = save_bottleneck(model, run_dir / ADAPTER_DIR, base_path)
    tokenizer.save_pretrained(out)
    return out


def finished_run_info(run_dir: Path) -> dict:
    """run.json of a run that completed; one clear error for anything else."""
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise CodepeftError(f"{run_dir} is not a codepeft run directory (no run.json)")
    info = json.loads(info_path.read_text())
    if info.get("status") != "completed":
        raise CodepeftError(f"run {run_dir} did not complete (status: {info.get('status')}); resume it first")
    return info


def run_model_spec(run_dir: Path, info: dict, device: str = "auto") -> ModelSpec:
    """What `load_run` loads before any adapter: the run's saved model (full fine-tuning) or its
    base, in the dtype it was trained in and with its quantisation."""
    spec = ModelSpec(**{**info["config"]["model"], "device": device})
    spec.quantization = info.get("quantization", spec.quantization)
    if "precision" in info:  # the dtype it was trained in, not what `auto` would pick on this machine
        spec.dtype = info["precision"]["weights"]
    spec.name_or_path = str(run_dir / MODEL_DIR) if (run_dir / MODEL_DIR).is_dir() else info["base_model"]
    return spec


def load_run(run_dir: str | Path, device: str = "auto"):
    """(model, tokenizer, run_info) of a finished run, ready for generation (eval mode)."""
    from codepeft.models.loading import load_model

    run_dir = Path(run_dir)
    info = finished_run_info(run_dir)
    model, tok = load_model(run_model_spec(run_dir, info, device))
    if not (run_dir / MODEL_DIR).is_dir():
        adapter = run_dir / ADAPTER_DIR
        model = (
            load_bottleneck(model, adapter) if is_bottleneck_dir(adapter) else PeftModel.from_pretrained(model, adapter)
        )
    model.eval()
    return model, tok, info


MANIFEST = "codepeft-manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(checkpoint: Path) -> None:
    """Size and SHA-256 of every file of a checkpoint Trainer just finished, written last (and
    atomically), so a checkpoint with a valid manifest is one that was saved whole."""
    files = {p.name: [p.stat().st_size, _sha256(p)] for p in sorted(checkpoint.iterdir()) if p.is_file()}
    files.pop(MANIFEST, None)
    tmp = checkpoint / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(files, indent=1))
    os.replace(tmp, checkpoint / MANIFEST)


def _manifest_problem(checkpoint: Path) -> str | None:
    try:
        files = json.loads((checkpoint / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return "its manifest is unreadable"
    for name, (size, sha) in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were saved"
        if _sha256(path) != sha:
            return f"{name} does not match its checksum"
    return None


def _structure_problem(checkpoint: Path) -> str | None:
    # Without a manifest (the process died right after Trainer's save, or an older run): Trainer
    # writes the weights and optimizer first and trainer_state.json after them, so a
    # checkpoint cut short lacks the state file or a part written before it.
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "trainer_state.json is missing or cut short"
    step = int(checkpoint.name.rsplit("-", 1)[1])
    if state.get("global_step") != step:
        return f"trainer_state.json is for step {state.get('global_step')}"
    weights = sorted(checkpoint.glob("*.safetensors")) or sorted(checkpoint.glob("*model*.bin"))
    if not weights:
        return "it holds no weights"
    if not (checkpoint / "optimizer.pt").is_file():
        return "optimizer.pt is missing"
    for path in weights:
        if path.suffix == ".safetensors" and (problem := _safetensors_problem(path)):
            return problem
    for path in [checkpoint / "optimizer.pt", *(p for p in weights if p.suffix == ".bin")]:
        try:  # torch saves zip archives; one cut short has no central directory
            zipfile.ZipFile(path).close()
        except (OSError, zipfile.BadZipFile):
            return f"{path.name} is not a whole torch archive"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors: the
    header says where the last tensor ends, which must be the end of the file."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, struct.error, ValueError, KeyError, TypeError):
        return f"{path.name} has an unreadable header"
    if path.stat().st_size != 8 + length + end:
        return f"{path.name} is cut short"
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is whole."""
    if (checkpoint / MANIFEST).exists():
        return _manifest_problem(checkpoint)
    return _structure_problem(checkpoint)


def last_good_checkpoint(directory: str | Path) -> str | None:
    """The newest whole Trainer checkpoint in `directory`. A broken one (the process was
    killed while saving, or a file was damaged since) is renamed `broken-checkpoint-N`, kept
    for inspection and never resumed from; the reason is logged."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")]
    found = [p for p in found if p.name.split("-", 1)[1].isdigit()]
    for checkpoint in sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        log.warning("not resuming from %s: %s; set aside as broken-%s", checkpoint, problem, checkpoint.name)
        checkpoint.rename(checkpoint.with_name(f"broken-{checkpoint.name}"))
    return None
