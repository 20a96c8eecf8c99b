"""Expanding a study into cells, and running one cell: train (unless the method trains nothing),
evaluate, and hand back everything the store records. `run_cell` takes and returns plain JSON
so it runs the same in this process, a worker process or a Ray task."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from codepeft.families import ZERO_SHOT, MethodFamily
from codepeft.study.config import StudyConfig, slug
from codepeft.study.specs import spec_changed, spec_text


def _family(method: str) -> MethodFamily:
    if method == ZERO_SHOT:
        return MethodFamily.ZERO_SHOT
    from codepeft.methods import get_method

    return get_method(method).family


def _describe(method, family: MethodFamily) -> str:
    """A report label: baselines say what they did ("RAG (BM25, 3 ex.)"), methods their name."""
    if family is not MethodFamily.BASELINE:
        return method.name
    from codepeft.baselines import make_baseline

    return make_baseline(method.name, method.options).label()


def expand(config: StudyConfig) -> list[dict]:
    """One cell per model x method x dataset x seed (a method limited to some `models` skips the
    others); methods that train nothing (zero-shot and
    the prompting baselines) run with the first seed only (ICL repeats over its own seeds)."""
    cells = []
    root = config.directory
    for model in config.models:
        for method in config.methods:
            if method.models is not None and model.name not in method.models:
                continue
            family = _family(method.name)
            trains = family not in (MethodFamily.ZERO_SHOT, MethodFamily.BASELINE)
            for dataset in config.datasets:
                for seed in config.seeds if trains else config.seeds[:1]:
                    cell_id = f"{model.name}/{method.display}/{dataset.name}/seed{seed}"
                    cell_dir = root / "cells" / "__".join(slug(p) for p in cell_id.split("/"))
                    spec = _spec(config, model, method, dataset, seed, trains, cell_dir)
                    spec["label"] = cell_id  # the run's name in trackers
                    cells.append(
                        {
                            "cell_id": cell_id,
                            "model": model.name,
                            "model_path": model.name_or_path,
                            "model_size": model.size,
                            "method": method.name,
                            "method_label": method.label or _describe(method, family),
                            "family": family,
                            "dataset": dataset.name,
                            "seed": seed,
                            "spec": spec,
                        }
                    )
    return cells


def _spec(config, model, method, dataset, seed, trains, cell_dir: Path) -> dict:
    model_spec = {
        **model.model_dump(mode="json", exclude={"label", "size"}),
        **method.model.model_dump(mode="json", exclude_none=True),
    }
    tasks = list(dict.fromkeys(config.eval.tasks + dataset.tasks))
    spec = {
        "cell_dir": str(cell_dir),
        "trains": trains,
        "tasks": tasks,
        "eval": config.eval.model_dump(mode="json", exclude={"tasks", "isolation", "together"}),
        "isolation": config.eval.isolation,  # resolved by the study before its first cell
        "model": model_spec,
    }
    if trains and config.backend.accelerate is not None:
        spec["accelerate"] = list(config.backend.accelerate)
    if trains:
        spec["run_config"] = {
            "name": slug(f"{config.name}-{model.name}-{method.display}-{dataset.name}"),
            "seed": seed,
            "model": model_spec,
            "method": {"name": method.name, **method.options},
            "data": {
                **config.data.model_dump(mode="json"),
                "train": [d.model_dump(mode="json") for d in dataset.train],
            },
            "train": {**config.train.model_dump(mode="json"), **method.train},
        }
    elif method.name != ZERO_SHOT:
        options = dict(method.options)
        # examples come from the cell's training set unless the method names a source itself
        options.setdefault("examples", dataset.train[0].source)
        spec["baseline"] = {"name": method.name, "options": options}
    return spec


# How long a cell waits for its directory when another process still writes in it (a worker of a
# killed study ends within a second; a second study on the same directory is refused earlier).
CELL_LOCK_WAIT_S = 30.0


def run_cell(spec: dict, log: bool = False, study: dict | None = None) -> dict:
    """Train and evaluate one cell; never raises: an error comes back as {"error": ...}, a cell
    whose directory another process holds as {"busy": ...}. With log=True (a worker process) its
    output goes to CELL_DIR/log.txt; with `study` (a Ray task) it ends when that process is gone."""
    from codepeft.study.lifetime import Busy, DirLock, watch_owner

    watch_owner(study)
    try:
        with DirLock(spec["cell_dir"], "cell", wait_s=CELL_LOCK_WAIT_S):
            if log:
                _log_to(Path(spec["cell_dir"]) / "log.txt")
            return _run(spec)
    except Busy as err:
        return {"busy": f"{err}; the cell is left for a later run"}
    except BaseException as err:  # noqa: BLE001 - a failing cell is recorded, the study goes on
        if isinstance(err, KeyboardInterrupt):
            raise
        return _error(err)


def _forget_if_changed(cell_dir: Path, spec: dict) -> None:
    """A cell whose settings changed starts over: its old run and results belong to other settings."""
    import shutil

    marker = cell_dir / "spec.json"
    if spec_changed(marker.read_text() if marker.is_file() else None, spec):
        for part in ("run", "eval"):
            shutil.rmtree(cell_dir / part, ignore_errors=True)
    marker.write_text(spec_text(spec))


def _log_to(path: Path) -> None:
    # File descriptors, not just sys.stdout: progress bars and library warnings write to them.
    import os
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _run(spec: dict) -> dict:
    result, target = _train(spec)
    if spec.get("evaluate") is False:  # evaluated later, with its group (codepeft.study.together)
        return {"trained": True}
    settings, done, todo = _evaluation_state(spec)
    if todo:
        from codepeft.evaluation import evaluate

        e, baseline = spec["eval"], spec.get("baseline") or {}
        done.update(
            evaluate(
                target,
                todo,
                settings,
                e["k"],
                limit=e["limit"],
                limits=e.get("limits"),
                output_dir=Path(spec["cell_dir"]) / "eval",
                prompt_format=e["prompt_format"],
                workers=e["sandbox_workers"],
                device=spec["model"]["device"],
                task_data=e["task_data"],
                method=baseline.get("name"),
                method_options=baseline.get("options"),
                isolation=spec.get("isolation", "auto"),
            )
        )
    return _with_scores(spec, result, done)


def run_cells_together(specs: list[dict], log: str | None = None) -> dict:
    """Evaluate a group of trained cells in this process (codepeft.evaluation_together); returns
    {"cells": {cell_id: result}} with each cell's result as `run_cell` gives it. A cell whose
    directory another process holds is left for a later run; one cell's error is its own."""
    import contextlib

    from codepeft.study.lifetime import Busy, DirLock

    if log:
        _log_to(Path(log))
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        ready = []
        for spec in specs:
            try:
                stack.enter_context(DirLock(spec["cell_dir"], "cell", wait_s=CELL_LOCK_WAIT_S))
            except Busy as err:
                results[spec["cell_id"]] = {"busy": f"{err}; the cell is left for a later run"}
                continue
            try:
                result, target = _train(spec)  # done by its own worker: reads the run's facts
                ready.append((spec, result, target, *_evaluation_state(spec)))
            except Exception as err:  # noqa: BLE001
                results[spec["cell_id"]] = _error(err)
        pending = [r for r in ready if r[5]]
        if pending:
            from codepeft.evaluation_together import Target, evaluate_together

            e = pending[0][0]["eval"]
            targets = [
                Target(
                    target,
                    Path(spec["cell_dir"]) / "eval",
                    settings,
                    (spec.get("baseline") or {}).get("name"),
                    (spec.get("baseline") or {}).get("options"),
                )
                for spec, _, target, settings, _, _ in pending
            ]
            # tasks some cell still lacks (a resumed group: those it was stopped in), in the spec's order
            todo = {t for *_, cell_todo in pending for t in cell_todo}
            outcomes = evaluate_together(
                targets,
                [t for t in pending[0][0]["tasks"] if t in todo],
                e["k"],
                limit=e["limit"],
                limits=e.get("limits"),
                prompt_format=e["prompt_format"],
                workers=e["sandbox_workers"],
                device=pending[0][0]["model"]["device"],
                task_data=e["task_data"],
                isolation=pending[0][0].get("isolation", "auto"),
            )
            for (spec, _, _, _, done, _), outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    results[spec["cell_id"]] = _error(outcome)
                else:
                    done.update(outcome)
        for spec, result, _, _, done, _ in ready:
            if spec["cell_id"] not in results:
                try:
                    results[spec["cell_id"]] = _with_scores(spec, result, done)
                except Exception as err:  # noqa: BLE001
                    results[spec["cell_id"]] = _error(err)
    return {"cells": results}


def _error(err: BaseException) -> dict:
    from codepeft.errors import CodepeftError

    detail = str(err) if isinstance(err, CodepeftError) else "".join(traceback.format_exception(err, limit=8))
    return {"error": f"{type(err).__name__}: {detail}"}


def _train(spec: dict) -> tuple[dict, str]:
    """Train the cell unless its run is complete (a run cut short resumes from its checkpoint);
    returns (the run's facts for the store, what to evaluate: the run directory or the model)."""
    from codepeft.config import parse_config
    from codepeft.training import train

    cell_dir = Path(spec["cell_dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    _forget_if_changed(cell_dir, spec)
    result: dict = {}
    if not spec["trains"]:
        return result, spec["model"]["name_or_path"]
    run_dir = cell_dir / "run"
    config = parse_config(spec["run_config"], f"cell {cell_dir.name}")
    info_path = run_dir / "run.json"
    status = json.loads(info_path.read_text()).get("status") if info_path.is_file() else None
    if status != "completed":
        if "accelerate" in spec:
            _launch(spec, cell_dir, run_dir, resume=status is not None)
        else:
            train(config, run_dir, resume=status is not None, run_name=spec.get("label"))
    result["run"], result["cost"], result["curves"] = _run_facts(run_dir)
    return result, str(run_dir)


def _evaluation_state(spec: dict):
    """(generation settings, task results already on disk, tasks still to evaluate)."""
    from codepeft.generation import GenerationSettings

    e = spec["eval"]
    settings = GenerationSettings(
        n=e["n"],
        temperature=e["temperature"],
        top_p=e["top_p"],
        max_new_tokens=e["max_new_tokens"],
        batch_size=e["batch_size"],
        seed=spec.get("run_config", {}).get("seed", 0),
    )
    limits = {t: e.get("limits", {}).get(t, e["limit"]) for t in spec["tasks"]}
    done = _finished_tasks(Path(spec["cell_dir"]) / "eval", spec["tasks"], settings, limits, spec.get("baseline") or {})
    return settings, done, [t for t in spec["tasks"] if t not in done]


def _with_scores(spec: dict, result: dict, done: dict) -> dict:
    """The cell's result for the store: run facts with every task's scores and evaluation time."""
    from codepeft.study.store import flatten_scores
    from codepeft.tasks import get_task

    e = spec["eval"]
    result["metrics"] = [
        row for task in spec["tasks"] for row in flatten_scores(task, done[task]["scores"], done[task].get("isolation"))
    ]
    result["problem_scores"] = {
        task: get_task(task, e["task_data"].get(task)).problem_scores(done[task]) for task in spec["tasks"]
    }
    eval_time = round(sum(done[t].get("seconds", 0.0) for t in spec["tasks"]), 1)
    result.setdefault("cost", {})["eval_time_s"] = eval_time
    return result


def _launch(spec: dict, cell_dir: Path, run_dir: Path, resume: bool) -> None:
    """Train the cell with `accelerate launch -m codepeft.cli train` (one cell on several devices)."""
    import subprocess
    import sys

    import yaml

    from codepeft.errors import CodepeftError

    config_path = cell_dir / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(spec["run_config"], sort_keys=False))
    where = ["--resume", str(run_dir)] if resume else [str(config_path), "--output-dir", str(run_dir)]
    command = [sys.executable, "-m", "accelerate.commands.launch", *spec["accelerate"], "-m", "codepeft.cli", "train"]
    done = subprocess.run([*command, *where], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise CodepeftError(f"accelerate launch failed ({done.returncode}): " + " | ".join(tail))


def _finished_tasks(eval_dir: Path, tasks: list[str], settings, limits: dict, baseline: dict) -> dict[str, dict]:
    """Task results already on disk from an interrupted attempt with the same settings."""
    from dataclasses import asdict

    done = {}
    for task in tasks:
        path = eval_dir / f"{task}.json"
        if not path.is_file():
            continue
        try:
            r = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # half-written: evaluate again
        gen = {k: v for k, v in r.get("generation", {}).items() if k != "stop"}
        want = {k: v for k, v in asdict(settings).items() if k != "stop"}
        same_baseline = (r.get("baseline") or {}).get("options") == _resolved_options(baseline)
        if gen == want and r.get("limit") == limits[task] and same_baseline:
            done[task] = r
    return done


def _resolved_options(baseline: dict) -> dict | None:
    if not baseline:
        return None
    from codepeft.methods import get_method

    return get_method(baseline["name"]).options(baseline["options"])


def _run_facts(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    info = json.loads((run_dir / "run.json").read_text())
    cost = json.loads((run_dir / "cost.json").read_text())
    run = {
        "run_dir": str(run_dir),
        "final_train_loss": info.get("final_train_loss"),
        "final_eval_loss": info.get("final_eval_loss"),
        "steps": cost.get("steps"),
        "resumed_from": cost.get("resumed_from"),
    }
    curves: dict[tuple[str, int], float] = {}  # (split, step) -> loss; the last line of a step wins
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill; the resumed run logged that step again
        for key, value in row.items():
            if key == "loss":
                curves["train", row["step"]] = value
            elif key.startswith("eval_") and key.endswith("_loss"):
                curves[key[len("eval_") : -len("_loss")] or "eval", row["step"]] = value
    ordered = [{"split": s, "step": step, "loss": loss} for (s, step), loss in sorted(curves.items())]
    return run, cost, ordered
