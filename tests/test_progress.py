"""Study progress: what a running cell is doing, and the time left from the cells done so far."""

from __future__ import annotations

import json

import pytest

from codepeft import progress


def _cell(model: str, trains: bool, cell_id: str = "") -> dict:
    return {"cell_id": cell_id or f"{model}/{trains}", "model": model, "spec": {"trains": trains}}


def test_time_left_comes_from_cells_like_the_ones_left():
    done = [(_cell("small", True), 100.0), (_cell("small", True), 140.0), (_cell("small", False), 30.0)]
    sizes = {"small": 1e8, "big": 4e8}
    # same model and kind: their mean
    assert progress.predict(done, _cell("small", True), sizes) == pytest.approx(120.0)
    assert progress.predict(done, _cell("small", False), sizes) == pytest.approx(30.0)
    # a model not seen yet: the same kind scaled by its size
    assert progress.predict(done, _cell("big", True), sizes) == pytest.approx(480.0)
    remaining = [_cell("small", True, "a"), _cell("big", False, "b")]
    assert progress.time_left(done, remaining, sizes) == pytest.approx(120.0 + 120.0)
    # nothing done yet: no estimate, rather than a made-up one; nothing left: zero
    assert progress.time_left([], remaining, sizes) is None
    assert progress.time_left(done, [], sizes) == 0.0


def test_progress_files_are_read_newest_first(tmp_path):
    assert progress.describe(progress.read(tmp_path)) == "starting"
    (tmp_path / "run").mkdir()
    (tmp_path / "eval").mkdir()
    progress.write(tmp_path / "run", phase="training", step=12, of=12)
    assert progress.describe(progress.read(tmp_path)) == "training step 12/12"
    progress.write(tmp_path / "eval", phase="evaluating", task="humaneval", index=1, of=3)
    assert progress.describe(progress.read(tmp_path)) == "evaluating humaneval (task 2/3)"
    assert not list((tmp_path / "eval").glob("*.json"))  # task results there are the only *.json
    (tmp_path / "eval" / progress.FILE).write_text("{half")  # a torn file is skipped, not fatal
    assert progress.describe(progress.read(tmp_path)) == "training step 12/12"
    assert json.loads((tmp_path / "run" / progress.FILE).read_text())["step"] == 12


def test_durations_read_as_clock_times():
    assert progress.duration(59.6) == "1:00"
    assert progress.duration(3725) == "1:02:05"
    assert progress.duration(None) == "?"
