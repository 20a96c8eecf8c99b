"""A study killed with SIGKILL in the middle of training or of evaluation resumes and records
exactly what an uninterrupted run records: the same numbers, no duplicates, training continued
from a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from codepeft.study import open_store


def _config(root, model) -> dict:
    return {
        "name": "crash",
        "output_dir": str(root / "study"),
        "models": [{"name_or_path": str(model), "label": "m"}],
        "methods": [{"name": "lora"}],
        "datasets": [{"name": "d", "train": {"source": "stdlib-instruct", "limit": 64}}],
        "data": {"format": "plain", "max_length": 96, "eval_limit": 8},
        "train": {"max_steps": 12, "batch_size": 4, "logging_steps": 1, "eval_steps": 4, "save_steps": 2,
                  "save_total_limit": None},
        "eval": {"tasks": ["stdlib-instruct-loss", "humaneval"], "limit": 4, "max_new_tokens": 16},
    }  # fmt: skip


def _run(root, model, env, wait_for=None):
    root.mkdir(parents=True, exist_ok=True)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(_config(root, model)))
    command = [sys.executable, "-m", "codepeft.cli", "study", str(path), "--no-report"]
    if wait_for is None:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    cell = root / "study" / "cells" / "m__lora__d__seed0"
    deadline = time.time() + 300
    while not (cell / wait_for).is_dir():
        assert proc.poll() is None, "the study ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its worker, mid-training
    proc.wait()


def _results(root):
    store = open_store(root / "study")
    try:
        return store.cells(), store.rows("metrics"), store.rows("runs"), store.rows("curves")
    finally:
        store.close()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("clean")
    _run(root, tiny_model("gpt_bigcode"), _env())
    return _results(root)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.parametrize("moment", ["run/checkpoints/checkpoint-6", "eval"], ids=["training", "evaluation"])
def test_sigkill_resumes_to_the_clean_result(tmp_path, tiny_model, clean, moment):
    model = tiny_model("gpt_bigcode")
    env = _env()
    _run(tmp_path / "killed", model, env, wait_for=moment)
    cells, metrics, runs, _ = _results(tmp_path / "killed")
    assert cells[0]["status"] == "running" and not metrics and not runs  # nothing half-recorded

    _run(tmp_path / "killed", model, env)  # the same command again
    cells, metrics, runs, curves = _results(tmp_path / "killed")
    clean_cells, clean_metrics, clean_runs, clean_curves = clean
    assert cells[0]["status"] == "done" and cells[0]["attempts"] == 2
    if moment == "eval":
        assert runs[0]["resumed_from"] is None  # training had finished: not redone
    else:
        # killed as checkpoint-6 appeared: resumed from it, or, when the kill cut its writing
        # short, from checkpoint-4 with the broken one set aside
        resumed = int(runs[0]["resumed_from"].rsplit("-", 1)[1])
        assert resumed >= 4
        if resumed == 4:
            checkpoints = tmp_path / "killed" / "study" / "cells" / "m__lora__d__seed0" / "run" / "checkpoints"
            assert (checkpoints / "broken-checkpoint-6").is_dir()
    assert runs[0]["steps"] == clean_runs[0]["steps"] == 12

    def values(rows):
        return {(r["task"], r["metric"]): r["value"] for r in rows}

    assert values(metrics).keys() == values(clean_metrics).keys()
    for key, value in values(clean_metrics).items():
        assert values(metrics)[key] == pytest.approx(value, rel=1e-5), key
    assert runs[0]["final_eval_loss"] == pytest.approx(clean_runs[0]["final_eval_loss"], rel=1e-5)
    # the loss curve has every step once, as in the clean run
    steps = sorted((c["split"], c["step"]) for c in curves)
    assert steps == sorted((c["split"], c["step"]) for c in clean_curves)
    for mine, theirs in zip(sorted(curves, key=lambda c: (c["split"], c["step"])),
                            sorted(clean_curves, key=lambda c: (c["split"], c["step"])), strict=True):  # fmt: skip
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4), (mine, theirs)


KILLED_WRITER = r"""
import sys, time
from codepeft.study.store import Store, flatten_scores

class Blocking:  # iterated inside the transaction, after the metric rows went in
    def __iter__(self):
        print("inside the transaction", flush=True)
        time.sleep(120)
        return iter([])

store = Store(sys.argv[1])
store.record("c", {"metrics": flatten_scores("t", {"pass@1": {"value": 0.5}}), "curves": Blocking()})
"""


def test_sigkill_during_a_store_write_leaves_nothing_half_written(tmp_path):
    from codepeft.study.store import Store, flatten_scores

    path = tmp_path / "results.sqlite"
    store = Store(path)
    cell = {"cell_id": "c", "model": "m", "model_path": "m", "method": "lora", "method_label": "lora",
            "family": "lora", "dataset": "d", "seed": 0, "spec": {}}  # fmt: skip
    store.add_cells([cell])
    store.mark_running("c", None)
    store.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "inside the transaction"
    proc.kill()
    proc.wait()
    store = Store(path)
    assert store.rows("metrics") == [] and store.status("c") == "running"
    store.record("c", {"metrics": flatten_scores("t", {"pass@1": {"value": 0.5}})})
    assert [(r["metric"], r["value"]) for r in store.rows("metrics")] == [("pass@1", 0.5)]
    assert store.status("c") == "done"
    store.close()
