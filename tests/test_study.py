"""Studies end to end on tiny models: the grid runs, failures are recorded without stopping the
others, re-runs skip finished cells and resume interrupted training, nothing is recorded twice."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from codepeft.cli import app
from codepeft.errors import CodepeftError
from codepeft.evaluation import without_timings
from codepeft.study import load_study, open_store
from codepeft.study.cells import expand

runner = CliRunner()


def _config(tmp_path, tiny_model, **changes) -> dict:
    config = {
        "name": "t",
        "output_dir": str(tmp_path / "study"),
        "models": [
            {"name_or_path": str(tiny_model("gpt_bigcode")), "label": "bigcode"},
            {"name_or_path": str(tiny_model("llama")), "label": "llama"},
        ],
        "methods": [
            {"name": "zero-shot"},
            {"name": "icl", "shots": 1, "seeds": 2},
            {"name": "lora"},
            {"name": "ia3"},
            {"name": "lora", "label": "lora-bad", "target_modules": ["no_such_module"]},
        ],
        "datasets": [{"name": "stdlib", "train": {"source": "stdlib-instruct", "limit": 48}}],
        "data": {"format": "plain", "max_length": 96, "eval_limit": 8},
        "train": {"max_steps": 4, "batch_size": 4, "logging_steps": 2, "eval_steps": 2, "save_steps": 2},
        "eval": {"tasks": ["stdlib-instruct-loss", "humaneval"], "limit": 2, "max_new_tokens": 8},
        "backend": {"workers": 2},
    }
    config.update(changes)
    return config


def _write(tmp_path, config) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _study(path, *extra):
    result = runner.invoke(app, ["study", path, *extra])
    return result


def _rows(directory, table):
    store = open_store(directory)
    try:
        return store.rows(table)
    finally:
        store.close()


def test_study_config_errors_name_the_problem(tmp_path, tiny_model):
    base = _config(tmp_path, tiny_model)
    cases = [
        ({"methods": [{"name": "lorra"}]}, "unknown method 'lorra'"),
        ({"methods": [{"name": "lora", "rr": 4}]}, "methods[lora]: unknown option(s) ['rr']"),
        ({"methods": [{"name": "lora", "train": {"max_stepz": 3}}]}, "unknown config key 'max_stepz'"),
        ({"eval": {"tasks": ["humaneva"]}}, "unknown task 'humaneva'"),
        ({"data": {"train": "stdlib-instruct"}}, "training data goes under `datasets`"),
        ({"methods": [{"name": "lora"}, {"name": "lora"}]}, "share the label(s) ['lora']"),
        ({"modelz": []}, "unknown config key 'modelz'"),
        ({"eval": {"tasks": ["humaneval"], "limits": {"mbpp": 3}}}, "eval.limits names tasks not in eval.tasks: mbpp"),
        ({"eval": {"tasks": ["humaneval"], "limits": {"humaneval": 0}}}, "eval.limits must be positive"),
    ]
    for change, message in cases:
        with pytest.raises(CodepeftError) as err:
            load_study(_write(tmp_path, {**base, **change}))
        assert message in str(err.value), (change, str(err.value))


def test_grid_expansion(tmp_path, tiny_model):
    config = load_study(_write(tmp_path, _config(tmp_path, tiny_model, seeds=[0, 1])))
    cells = expand(config)
    # 2 models x (3 trained methods x 2 seeds + zero-shot + icl, first seed only) x 1 dataset
    assert len(cells) == 2 * (3 * 2 + 2)
    icl = next(c for c in cells if c["method"] == "icl")
    assert icl["spec"]["baseline"]["options"] == {"shots": 1, "seeds": 2, "examples": "stdlib-instruct"}
    lora = next(c for c in cells if c["method_label"] == "lora" and c["seed"] == 1)
    assert lora["spec"]["run_config"]["seed"] == 1
    assert lora["spec"]["run_config"]["data"]["train"][0]["limit"] == 48
    assert len({c["spec"]["cell_dir"] for c in cells}) == len(cells)


def test_study_runs_resumes_and_never_duplicates(tmp_path, tiny_model, monkeypatch):
    from codepeft.study import runner as study_runner

    monkeypatch.setattr(study_runner, "PROGRESS_EVERY_S", 0.5)
    path = _write(tmp_path, _config(tmp_path, tiny_model))
    study_dir = tmp_path / "study"
    result = _study(path)
    assert result.exit_code == 1, result.output  # one cell failed: the exit says so
    said = " ".join(result.output.split())
    assert "(1/10 cells," in said and "(10/10 cells," in said and "elapsed, about" in said
    assert "0:00 left)" in said  # the last cell leaves nothing
    assert re.search(r"progress \S+: (training step \d+/\d+|evaluating \S+ \(task \d/\d\)), \d+:\d\d so far", said)
    cells = {c["cell_id"]: c for c in _rows(study_dir, "cells")}
    assert len(cells) == 10
    failed = [c for c in cells.values() if c["status"] == "failed"]
    assert [c["method_label"] for c in failed] == ["lora-bad", "lora-bad"]
    assert "no_such_module" in failed[0]["error"]
    assert all(c["status"] == "done" for c in cells.values() if c["method_label"] != "lora-bad")
    metrics = pd.DataFrame(_rows(study_dir, "metrics"))
    assert not metrics.duplicated(["cell_id", "task", "metric"]).any()
    assert set(metrics["task"]) == {"stdlib-instruct-loss", "humaneval"}
    from codepeft.execution import detect_isolation

    level = detect_isolation("auto").value  # the study's default: bubblewrap wherever it works
    humaneval = metrics[metrics["task"] == "humaneval"]
    assert {json.loads(d)["isolation"] for d in humaneval["detail"]} == {level}
    assert f"sandbox {level}" in (study_dir / "report" / "index.html").read_text()
    icl = metrics[metrics["cell_id"] == "bigcode/icl/stdlib/seed0"].set_index("metric")
    assert (
        json.loads(icl.loc["pass@1", "detail"])["per_seed"]
        and len(json.loads(icl.loc["pass@1", "detail"])["per_seed"]) == 2
    )
    runs = pd.DataFrame(_rows(study_dir, "runs"))
    assert len(runs) == 4 and runs["final_eval_loss"].notna().all()
    costs = pd.DataFrame(_rows(study_dir, "costs")).set_index("cell_id")
    assert costs.loc["llama/lora/stdlib/seed0", "trainable_params"] > 0
    curves = pd.DataFrame(_rows(study_dir, "curves"))
    assert set(curves["split"]) == {"train", "eval"}
    # the training run's loss curve is the store's
    lora_dir = tmp_path / "study" / "cells" / "bigcode__lora__stdlib__seed0" / "run"
    logged = [json.loads(x) for x in (lora_dir / "metrics.jsonl").read_text().splitlines()]
    stored = curves[(curves["cell_id"] == "bigcode/lora/stdlib/seed0") & (curves["split"] == "train")]
    assert sorted(stored["loss"]) == sorted(r["loss"] for r in logged if "loss" in r)
    assert (study_dir / "report" / "index.html").is_file()
    assert "Cells: 8 done, 2 failed" in (study_dir / "report" / "index.html").read_text()

    # Interrupt one trained cell as a kill during training would: the last checkpoint is gone,
    # its run is marked running, and so is the cell (its results stay until replaced).
    shutil.rmtree(lora_dir / "checkpoints" / "checkpoint-4")
    info = json.loads((lora_dir / "run.json").read_text())
    (lora_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    (lora_dir.parent / "eval" / "humaneval.json").unlink()
    store = open_store(study_dir)
    with store.transaction() as db:
        db.execute("UPDATE cells SET status='running' WHERE cell_id='bigcode/lora/stdlib/seed0'")
    store.close()
    before = {c["cell_id"]: c["attempts"] for c in _rows(study_dir, "cells")}

    result = _study(path, "--no-report")
    assert result.exit_code == 1  # lora-bad fails again
    after = {c["cell_id"]: c for c in _rows(study_dir, "cells")}
    redone = {cid for cid in after if after[cid]["attempts"] != before[cid]}
    assert redone == {"bigcode/lora/stdlib/seed0", "bigcode/lora-bad/stdlib/seed0", "llama/lora-bad/stdlib/seed0"}
    assert "skipped bigcode/ia3/stdlib/seed0" in " ".join(result.output.split())
    assert after["bigcode/lora/stdlib/seed0"]["status"] == "done"
    run = next(r for r in _rows(study_dir, "runs") if r["cell_id"] == "bigcode/lora/stdlib/seed0")
    assert run["resumed_from"].endswith("checkpoint-2") and run["steps"] == 4
    metrics_again = pd.DataFrame(_rows(study_dir, "metrics"))
    assert len(metrics_again) == len(metrics)
    assert not metrics_again.duplicated(["cell_id", "task", "metric"]).any()

    # status and export, as a user runs them
    status = runner.invoke(app, ["study", "status", path])
    assert status.exit_code == 0 and "8 done, 2 failed" in status.output
    assert "time left about" in " ".join(status.output.split())  # the two failed cells are due again
    export = runner.invoke(app, ["study", "export", path, "--format", "parquet"])
    assert export.exit_code == 0, export.output
    exported = pd.read_parquet(study_dir / "export" / "metrics.parquet")
    assert len(exported) == len(metrics_again)
    assert runner.invoke(app, ["study", "export", path]).exit_code == 0
    assert len(pd.read_csv(study_dir / "export" / "cells.csv")) == 10

    # changing a cell's settings makes exactly the affected cells due again
    changed = _config(tmp_path, tiny_model)
    changed["methods"][3] = {"name": "ia3", "train": {"max_steps": 3}}
    path = _write(tmp_path, changed)
    status = runner.invoke(app, ["study", "status", path])
    assert "6 done, 2 failed, 2 pending" in status.output  # both ia3 cells are due again
    _study(path, "--no-report")
    steps = {r["cell_id"]: r["steps"] for r in _rows(study_dir, "runs")}
    assert steps["bigcode/ia3/stdlib/seed0"] == steps["llama/ia3/stdlib/seed0"] == 3  # retrained, not reused
    assert steps["bigcode/lora/stdlib/seed0"] == 4


def test_ray_backend_on_a_local_instance(tmp_path, tiny_model):
    config = _config(tmp_path, tiny_model, backend={"kind": "ray", "cpus_per_cell": 1})
    config["models"] = config["models"][:1]
    config["methods"] = [{"name": "zero-shot"}, {"name": "lora"}]
    result = _study(_write(tmp_path, config), "--no-report")
    assert result.exit_code == 0, result.output
    cells = _rows(tmp_path / "study", "cells")
    assert [c["status"] for c in cells] == ["done", "done"]
    assert len(_rows(tmp_path / "study", "runs")) == 1
    assert len(_rows(tmp_path / "study", "metrics")) == 2 * 3  # loss, perplexity, pass@1 per cell


def test_cells_can_train_under_accelerate_launch(tmp_path, tiny_model):
    config = _config(tmp_path, tiny_model, backend={"accelerate": ["--num_processes", "1", "--cpu"]})
    config["models"] = config["models"][:1]
    config["methods"] = [{"name": "lora"}]
    result = _study(_write(tmp_path, config), "--no-report")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "study" / "cells" / "bigcode__lora__stdlib__seed0" / "run"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and (run_dir / "adapter").is_dir()
    assert (run_dir.parent / "run_config.yaml").is_file()
    assert _rows(tmp_path / "study", "runs")[0]["steps"] == 4


def test_cells_evaluated_together_score_as_cells_evaluated_alone(tmp_path, tiny_model):
    """`eval.together` (the default): zero-shot, ICL and two LoRA cells of one base are evaluated by
    one worker in shared batches, (IA)3 one at a time beside them; every task result equals the
    one a worker per cell writes (`eval.together: false`)."""
    sampled = {
        "tasks": ["stdlib-instruct-loss", "humaneval"],
        "limit": 2,
        "max_new_tokens": 8,
        "n": 2,
        "k": [1, 2],
        "temperature": 0.8,
    }
    methods = [
        {"name": "zero-shot"},
        {"name": "icl", "shots": 1, "seeds": 1},
        {"name": "lora", "init_lora_weights": False},
        {"name": "lora", "label": "lora-r4", "r": 4, "init_lora_weights": False},
        {"name": "ia3"},
    ]
    results = {}
    for together in (True, False):
        config = _config(tmp_path / str(together), tiny_model, methods=methods, eval={**sampled, "together": together})
        config["models"] = config["models"][1:]  # llama
        (tmp_path / str(together)).mkdir()
        assert _study(_write(tmp_path / str(together), config)).exit_code == 0
        study = tmp_path / str(together) / "study"
        logs = list((study / "logs").glob("together-*.log")) if (study / "logs").is_dir() else []
        assert len(logs) == (1 if together else 0)
        results[together] = {
            (cell.name, f.name): without_timings(json.loads(f.read_text().replace(str(study), "STUDY")))
            for cell in (study / "cells").iterdir()
            if cell.is_dir()
            for f in (cell / "eval").glob("*.json")
        }
    assert len(results[True]) == 10  # five cells x two tasks
    assert results[True] == results[False]
