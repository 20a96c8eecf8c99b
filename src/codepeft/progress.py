"""How far a study has got: each running cell's phase, the time spent, and the time left.

A training run writes `<run>/.progress` at every step, an evaluation `<eval>/.progress` at every
task (one JSON object, replaced atomically so a reader never sees half of one; not named *.json,
which in an evaluation folder are task results); the study process and `codepeft study status`
read the newest of a cell's two.

The time left is the sum over the cells not done of a prediction from the cells done so far:
the mean time of done cells of the same kind (trains or not) on the same model; failing that, of
the same kind on any model, scaled by model size (parameters); failing that, of every done cell.
Before the first cell ends there is nothing honest to predict from, and the estimate says so.
(`codepeft estimate` predicts memory, not time, so it does not enter here.)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = ".progress"


def write(directory: str | Path, **fields) -> None:
    """Record a phase (`training`, `evaluating`) and where in it the run is."""
    path = Path(directory) / FILE
    tmp = path.with_name(f"{FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**fields, "at": time.time()}))
        os.replace(tmp, path)
    except OSError:
        pass  # progress is a courtesy: a full disk must not fail the run for it


def read(cell_dir: str | Path) -> dict | None:
    """The newest progress of a cell (its training or its evaluation), or None."""
    found = []
    for part in ("run", "eval"):
        try:
            found.append(json.loads((Path(cell_dir) / part / FILE).read_text()))
        except (OSError, ValueError):
            continue
    return max(found, key=lambda p: p.get("at", 0.0)) if found else None


def describe(progress: dict | None) -> str:
    if not progress:
        return "starting"
    if progress.get("phase") == "training":
        return f"training step {progress.get('step', 0)}/{progress.get('of', '?')}"
    if progress.get("phase") == "evaluating":
        return f"evaluating {progress.get('task')} (task {progress.get('index', 0) + 1}/{progress.get('of', '?')})"
    return str(progress.get("phase", "?"))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _kind(cell: dict) -> bool:
    return bool(cell["spec"]["trains"])


def predict(done: list[tuple[dict, float]], cell: dict, sizes: dict[str, float]) -> float | None:
    """Seconds `cell` should take, from the (cell, seconds) pairs of the cells done so far."""
    same_model = [s for c, s in done if _kind(c) == _kind(cell) and c["model"] == cell["model"]]
    if same_model:
        return sum(same_model) / len(same_model)
    same_kind = [(c, s) for c, s in done if _kind(c) == _kind(cell)]
    if same_kind:
        scaled = [s * _ratio(sizes, cell["model"], c["model"]) for c, s in same_kind]
        return sum(scaled) / len(scaled)
    return sum(s for _, s in done) / len(done) if done else None


def _ratio(sizes: dict[str, float], model: str, seen: str) -> float:
    if sizes.get(model) and sizes.get(seen):
        return sizes[model] / sizes[seen]
    return 1.0


def time_left(done: list[tuple[dict, float]], remaining: list[dict], sizes: dict[str, float]) -> float | None:
    """Seconds until every cell in `remaining` is done (run one after another), or None."""
    if not remaining:
        return 0.0
    if not done:
        return None
    return sum(predict(done, c, sizes) or 0.0 for c in remaining)


def model_sizes(cells: list[dict], recorded: dict[str, float | None]) -> dict[str, float]:
    """Parameters per model: from the config (`size`) or counted when one of its cells ran."""
    sizes = {}
    for c in cells:
        size = c.get("model_size") or recorded.get(c["cell_id"])
        if size:
            sizes.setdefault(c["model"], float(size))
    return sizes
