"""The command line as a user runs it: tables, runs, and one clear error without a traceback."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from codepeft.cli import app

runner = CliRunner()


def test_methods_table_lists_every_registered_method():
    from codepeft.methods import all_methods

    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for m in all_methods():
        assert m.name in result.output
    rows = json.loads(runner.invoke(app, ["methods", "--json"]).output)
    lora = next(r for r in rows if r["method"] == "lora")
    assert lora["defaults"] == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05} and lora["mergeable"]
    detail = runner.invoke(app, ["methods", "adapter_houlsby"])
    assert "zero_init_up" in detail.output and "mergeable: False" in detail.output


def test_train_command_writes_a_run(tmp_path, tiny_model, train_file):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "configs/quickstart.yaml",
            "--set",
            f"model.name_or_path={tiny_model('gpt_bigcode')}",
            "--set",
            f"data.train.0.source={train_file}",
            "--set",
            "method.name=ia3",
            "--set",
            "train.max_steps=3",
            "--set",
            "data.max_length=64",
            "--output-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "run directory" in result.output and "trainable" in result.output
    for name in ("run.json", "metrics.jsonl", "cost.json", "adapter/adapter_config.json"):
        assert (out / name).is_file(), name


def test_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  name: lora\ntrian:\n  max_steps: 1\n")
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2
    assert "unknown config key 'trian'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "holds no run.json" in result.output


def test_data_stats_prints_split_sizes():
    result = runner.invoke(app, ["data", "stats", "stdlib-instruct"])
    assert result.exit_code == 0
    for split in ("train", "valid", "test"):
        assert split in result.output
