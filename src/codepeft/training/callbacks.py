"""Trainer callbacks: loss curves to metrics.jsonl, progress for a watching study, and AdaLoRA's
rank reallocation."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from codepeft import progress
from codepeft.training.artifacts import write_manifest


class ProgressFile(TrainerCallback):
    """`<run>/.progress` after every step (codepeft.progress), for `codepeft study` to show."""

    def __init__(self, directory: Path):
        self.directory = directory

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            progress.write(self.directory, phase="training", step=state.global_step, of=state.max_steps)


class MetricsLog(TrainerCallback):
    """Appends every train-loss and eval-loss log to metrics.jsonl (one JSON object a line)."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter() - self._resumed_time()

    def _resumed_time(self) -> float:
        """On resume the clock continues from the last row kept (training time, not idle time)."""
        rows = [r for line in self.path.read_text().splitlines() if (r := _parse(line))] if self.path.is_file() else []
        return max((r.get("time_s", 0.0) for r in rows), default=0.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "time_s": round(time.perf_counter() - self.started, 3),  # training seconds so far
        }
        row.update({k: v for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)})
        if not any(k == "loss" or k.endswith("_loss") for k in row):
            return  # the end-of-training summary is in cost.json
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so no step appears twice (and a last
        line cut short by a kill)."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if (row := _parse(line)) and row["step"] <= step]
        self.path.write_text("".join(r + "\n" for r in rows))


def _parse(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


class CheckpointManifest(TrainerCallback):
    """After Trainer saved a checkpoint whole, record its files' sizes and checksums; resuming
    verifies them (`artifacts.checkpoint_problem`)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                write_manifest(checkpoint)


class AdaLoraSchedule(TrainerCallback):
    """AdaLoRA reallocates ranks after each optimizer step and before gradients are zeroed."""

    def __init__(self, model):
        self.model = model

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.model.base_model.update_and_allocate(state.global_step)
