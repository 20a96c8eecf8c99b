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


QUIET_START = """
import importlib.abc, sys

class ForceAvx512Bf16(importlib.abc.MetaPathFinder):
    # bitsandbytes warns at import on CPUs with AVX512_BF16: answer its CPU probe with yes
    def find_spec(self, name, path, target=None):
        if name == "bitsandbytes.backends.cpu.ops":
            import bitsandbytes.functional as functional
            functional.has_avx512bf16 = lambda: True

sys.meta_path.insert(0, ForceAvx512Bf16())
from codepeft.cli import app
heavy = sorted(m for m in ("torch", "transformers", "peft", "bitsandbytes", "datasets") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
sys.argv = ["codepeft", *sys.argv[1:]]
app()
"""


def _cli_subprocess(*argv: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", QUIET_START, *argv], capture_output=True, text=True, timeout=300)


def test_help_prints_nothing_but_help_and_loads_no_heavy_library():
    done = _cli_subprocess("--help")
    assert done.returncode == 0 and "Usage" in done.stdout
    assert done.stderr.strip() == "HEAVY []", done.stderr  # torch & co. load only where a command needs them


def test_a_command_that_imports_peft_stays_quiet_on_an_avx512_bf16_cpu():
    # `codepeft methods` imports peft, which imports bitsandbytes; on AVX512_BF16 CPUs
    # bitsandbytes then warns about an optional kernel of a path codepeft never takes
    done = _cli_subprocess("methods", "lora")
    assert done.returncode == 0 and "low-rank" in done.stdout
    assert done.stderr.strip() == "HEAVY []", done.stderr


def test_the_public_functions_keep_their_signatures():
    import inspect

    import codepeft
    from codepeft.evaluation import evaluate
    from codepeft.study import load_study, run_study

    assert codepeft.evaluate is evaluate and codepeft.run_study is run_study and codepeft.load_study is load_study
    assert "settings" in inspect.signature(codepeft.evaluate).parameters
