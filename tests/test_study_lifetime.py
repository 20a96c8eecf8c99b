"""A study's processes live and die with it: the parent alone killed (SIGKILL) at any moment leaves
nothing running, SIGTERM / SIGINT stop it cleanly, a second study on the same directory is refused,
a cell's directory has one writer, and recording survives whatever a crash leaves behind. After
each interruption the same command finishes the study with the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from codepeft.study import open_store

CELLS = ("m/lora/d/seed0", "m/ia3/d/seed0")
FIRST_DIR = "m__lora__d__seed0"


def _config(root: Path, model) -> Path:
    config = {
        "name": "lifetime",
        "output_dir": str(root / "study"),
        "models": [{"name_or_path": str(model), "label": "m"}],
        "methods": [{"name": "lora"}, {"name": "ia3"}],
        "datasets": [{"name": "d", "train": {"source": "stdlib-instruct", "limit": 64}}],
        "data": {"format": "plain", "max_length": 96, "eval_limit": 8},
        "train": {"max_steps": 12, "batch_size": 4, "logging_steps": 1, "eval_steps": 4, "save_steps": 4,
                  "save_total_limit": None},
        "eval": {"tasks": ["stdlib-instruct-loss", "humaneval"], "limit": 4, "max_new_tokens": 16},
        "backend": {"workers": 1},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "codepeft.cli", "study", str(config), "--no-report"]


def _start(config: Path, ignore_sigint: bool = False) -> subprocess.Popen:
    def ignore():  # as a shell starts a background job: SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        _command(config),
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore if ignore_sigint else None,
    )


def _finish(config: Path) -> None:
    done = subprocess.run(_command(config), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _worker(proc: subprocess.Popen) -> bool:
    return any("codepeft.study.worker" in _cmdline(c) for c in _descendants(proc.pid))


def _cmdline(p: psutil.Process) -> str:
    """The command line of a live process; "" once it has ended or is a zombie (a short-lived child,
    such as a toolchain probe, may be either by now)."""
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


MOMENTS = {
    # the worker is up, the model not yet trained from
    "loading": lambda cell, proc: _worker(proc) and not (cell / "run" / "run.json").is_file(),
    "training, before the first checkpoint": lambda cell, proc: (cell / "run" / "metrics.jsonl").is_file(),
    "between checkpoints": lambda cell, proc: (cell / "run" / "checkpoints" / "checkpoint-4").is_dir(),
    "evaluation": lambda cell, proc: (cell / "eval").is_dir(),
}


def _wait_for(moment: str, root: Path, proc: subprocess.Popen) -> None:
    cell = root / "study" / "cells" / FIRST_DIR
    deadline = time.time() + 300
    while not MOMENTS[moment](cell, proc):
        assert proc.poll() is None, f"the study ended before {moment}: {proc.stderr.read()}"
        assert time.time() < deadline, f"{moment} never came"
        time.sleep(0.02)


def _alive(procs: list[psutil.Process]) -> list[str]:
    return [f"{p.pid} {line[:120]}" for p in procs if (line := _cmdline(p))]


def _gone_within(procs: list[psutil.Process], seconds: float) -> list[str]:
    deadline = time.time() + seconds
    while (left := _alive(procs)) and time.time() < deadline:
        time.sleep(0.1)
    return left


def _results(root: Path):
    store = open_store(root / "study")
    try:
        return {c["cell_id"]: c for c in store.cells()}, store.rows("metrics"), store.rows("runs"), store.rows("curves")
    finally:
        store.close()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("clean")
    _finish(_config(root, tiny_model("gpt_bigcode")))
    return _results(root)


def _assert_same_as_clean(root: Path, clean) -> None:
    cells, metrics, runs, curves = _results(root)
    clean_cells, clean_metrics, clean_runs, clean_curves = clean
    assert {c: cells[c]["status"] for c in cells} == {c: "done" for c in clean_cells}

    def values(rows):
        return {(r["cell_id"], r["task"], r["metric"]): r["value"] for r in rows}

    assert values(metrics).keys() == values(clean_metrics).keys()
    for key, value in values(clean_metrics).items():
        assert values(metrics)[key] == pytest.approx(value, rel=1e-5), key
    assert {r["cell_id"]: r["steps"] for r in runs} == {r["cell_id"]: r["steps"] for r in clean_runs}
    # every curve step once, with the clean run's loss
    key = lambda c: (c["cell_id"], c["split"], c["step"])  # noqa: E731
    assert sorted(map(key, curves)) == sorted(map(key, clean_curves))
    theirs = {key(c): c["loss"] for c in clean_curves}
    for c in curves:
        assert c["loss"] == pytest.approx(theirs[key(c)], rel=1e-4), c


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkill_of_the_study_process_alone(tmp_path, tiny_model, clean, moment):
    config = _config(tmp_path, tiny_model("gpt_bigcode"))
    proc = _start(config)
    _wait_for(moment, tmp_path, proc)
    below = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, as the OOM killer or a dead terminal does
    proc.wait()
    assert not (left := _gone_within(below, 5.0)), f"alive 5 s after the study was killed: {left}"
    cells, _, _, _ = _results(tmp_path)
    assert cells[CELLS[0]]["status"] == "running"  # nothing half-recorded

    _finish(config)  # the same command again
    _assert_same_as_clean(tmp_path, clean)
    cells, _, _, _ = _results(tmp_path)
    assert cells[CELLS[0]]["attempts"] == 2 and cells[CELLS[1]]["attempts"] == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_the_study_cleanly(tmp_path, tiny_model, clean, signum):
    config = _config(tmp_path, tiny_model("gpt_bigcode"))
    # SIGINT is sent to a study whose SIGINT was ignored at start (a background job of a script)
    proc = _start(config, ignore_sigint=signum == signal.SIGINT)
    _wait_for("training, before the first checkpoint", tmp_path, proc)
    below = _descendants(proc.pid)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stopped: study stopped by " + signal.Signals(signum).name), err
    assert "1 running cell(s) marked interrupted" in lines[0]
    assert not (left := _gone_within(below, 5.0)), left
    cells, metrics, _, _ = _results(tmp_path)
    assert cells[CELLS[0]]["status"] == "interrupted" and cells[CELLS[1]]["status"] == "pending"
    assert not metrics
    status = subprocess.run([*_command(config)[:4], "status", str(config)], env=_env(), capture_output=True, text=True)
    assert "1 interrupted, 1 pending" in status.stdout

    _finish(config)
    _assert_same_as_clean(tmp_path, clean)


def test_a_second_signal_stops_at_once(tmp_path, tiny_model):
    config = _config(tmp_path, tiny_model("gpt_bigcode"))
    proc = _start(config)
    _wait_for("training, before the first checkpoint", tmp_path, proc)
    below = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    started = time.time()
    proc.communicate(timeout=30)
    # 143 from the second signal's handler; or, when the first signal's wind-down was already
    # over and the interpreter finalising (which restores the default action), killed by it
    assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGTERM)
    assert time.time() - started < 5
    assert not _gone_within(below, 5.0)


def test_a_second_study_on_the_same_directory_is_refused(tmp_path, tiny_model, clean):
    config = _config(tmp_path, tiny_model("gpt_bigcode"))
    first = _start(config)
    _wait_for("loading", tmp_path, first)
    second = subprocess.run(_command(config), env=_env(), capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert "already running" in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    _assert_same_as_clean(tmp_path, clean)


def test_a_cell_directory_has_one_writer(tmp_path, monkeypatch):
    from codepeft.study import cells as cells_module
    from codepeft.study.lifetime import DirLock

    cell_dir = tmp_path / "cell"
    holder = subprocess.Popen(
        [sys.executable, "-c", "from codepeft.study.lifetime import DirLock\nimport sys, time\n"
         "with DirLock(sys.argv[1], 'cell'):\n    print('held', flush=True)\n    time.sleep(60)", str(cell_dir)],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setattr(cells_module, "CELL_LOCK_WAIT_S", 0.5)
    result = cells_module.run_cell({"cell_dir": str(cell_dir)})
    assert set(result) == {"busy"} and f"pid {holder.pid}" in result["busy"], result
    holder.kill()  # a holder that dies leaves no lock behind: the next writer takes it at once
    holder.wait()
    started = time.time()
    with DirLock(cell_dir, "cell", wait_s=0):
        assert json.loads((cell_dir / ".codepeft-cell.lock").read_text())["pid"] == os.getpid()
    assert time.time() - started < 1


def test_curves_from_a_crashed_run_keep_each_step_once(tmp_path):
    from codepeft.study.cells import _run_facts

    (tmp_path / "run.json").write_text(json.dumps({"final_train_loss": 1.0}))
    (tmp_path / "cost.json").write_text(json.dumps({"steps": 3}))
    lines = [
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.5},
        {"step": 2, "eval_loss": 2.9},
        {"step": 3, "loss": 2.2},  # a second writer, or a resumed run, logs steps again ...
        {"step": 2, "loss": 2.4},
        {"step": 3, "loss": 2.1},  # ... and the last line of a step is what holds
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "lo'  # cut short by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    _, _, curves = _run_facts(tmp_path)
    assert curves == [
        {"split": "eval", "step": 2, "loss": 2.9},
        {"split": "train", "step": 1, "loss": 3.0},
        {"split": "train", "step": 2, "loss": 2.4},
        {"split": "train", "step": 3, "loss": 2.1},
    ]


def test_a_result_that_cannot_be_recorded_fails_its_cell_only(tmp_path):
    from codepeft.study.runner import _finish as finish
    from codepeft.study.store import Store

    store = Store(tmp_path / "results.sqlite")
    cells = [
        {"cell_id": c, "model": "m", "model_path": "p", "method": c, "method_label": c, "family": "lora",
         "dataset": "d", "seed": 0, "spec": {}}
        for c in ("broken", "fine")
    ]  # fmt: skip
    store.add_cells(cells)
    events = []
    for cell in cells:
        store.mark_running(cell["cell_id"], None)
    finish(store, cells[0], {"metrics": [{"value": 1.0}]}, lambda e, c: events.append((e, c.get("error"))))
    good = {
        "metrics": [{"task": "t", "metric": "m", "value": 0.5}],
        "curves": [{"split": "train", "step": 1, "loss": 2}],
    }
    finish(store, cells[1], good, lambda e, c: events.append((e, c.get("error"))))
    status = {c["cell_id"]: (c["status"], c["error"]) for c in store.cells()}
    assert status["broken"][0] == "failed" and status["broken"][1].startswith("recording the result failed: KeyError")
    assert status["fine"] == ("done", None)
    assert [e for e, _ in events] == ["failed", "done"]
    assert store.rows("metrics") == [
        {"cell_id": "fine", "task": "t", "metric": "m", "value": 0.5, "n": None, "k": None, "ci_low": None,
         "ci_high": None, "sd": None, "detail": None}
    ]  # fmt: skip
    store.close()
