"""Bad input, as a user would give it on the command line: every case ends with one clear
message naming the problem (and the file, line or key where it is), a non-zero exit code, no
traceback, and nothing already recorded lost."""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import TRAIN_ROWS, write_jsonl
from typer.testing import CliRunner

from codepeft.cli import app

runner = CliRunner()


@dataclass
class Case:
    name: str
    argv: Callable[[Path, Callable], list[str]]  # (tmp_path, tiny_model) -> arguments
    message: str  # a regular expression the message must match


def _yaml(tmp: Path, text: str, name: str = "run.yaml") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _train(tmp: Path, model, *sets: str, arch: str = "gpt_bigcode", data: str | None = None) -> list[str]:
    data = data or str(write_jsonl(tmp / "train.jsonl", TRAIN_ROWS))
    base = [f"model.name_or_path={model(arch)}", f"data.train.0.source={data}", "train.max_steps=1"]
    argv = ["train", _yaml(tmp, "method:\n  name: lora\n"), "--output-dir", str(tmp / "run")]
    for item in [*base, "data.format=plain", "data.max_length=32", *sets]:
        argv += ["--set", item]
    return argv


def _rows_file(tmp: Path, text: str, name: str = "data.jsonl") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _study(tmp: Path, model, body: str) -> list[str]:
    head = f"name: s\noutput_dir: {tmp / 'study'}\nmodels:\n  - name_or_path: {model('gpt_bigcode')}\n"
    return ["study", _yaml(tmp, head + body, "study.yaml")]


def _unfinished_run(tmp: Path) -> str:
    run = tmp / "r"
    run.mkdir()
    (run / "run.json").write_text('{"status": "failed"}')
    return str(run)


GOOD_ROW = json.dumps(TRAIN_ROWS[0])
STUDY_OK = "methods: [lora]\ndatasets: [stdlib-instruct]\n"

CASES = [
    # configuration files and --set
    Case("malformed_yaml", lambda t, m: ["train", _yaml(t, "method:\n  name: [lora\n")], r"run\.yaml.*line \d+"),
    Case("yaml_tab_indent", lambda t, m: ["train", _yaml(t, "method:\n\tname: lora\n")], r"run\.yaml.*line \d+"),
    Case("config_not_a_mapping", lambda t, m: ["train", _yaml(t, "- lora\n- ia3\n")], r"run\.yaml.*mapping"),
    Case("config_file_missing", lambda t, m: ["train", str(t / "nope.yaml")], r"not found.*nope\.yaml"),
    Case(
        "unknown_top_level_key",
        lambda t, m: ["train", _yaml(t, "trian:\n  max_steps: 1\n")],
        r"unknown config key 'trian'.*did you mean 'train'",
    ),
    Case(
        "unknown_nested_key",
        lambda t, m: ["train", _yaml(t, "train:\n  lerning_rate: 0.1\n")],
        r"train\.lerning_rate.*did you mean 'learning_rate'",
    ),
    Case(
        "wrong_type",
        lambda t, m: ["train", _yaml(t, "train:\n  max_steps: many\n")],
        r"train\.max_steps.*(integer|int)",
    ),
    Case("out_of_range_value", lambda t, m: ["train", _yaml(t, "train:\n  batch_size: 0\n")], r"train\.batch_size"),
    Case(
        "set_without_equals",
        lambda t, m: ["train", _yaml(t, "seed: 0\n"), "--set", "train.max_steps"],
        r"--set.*KEY=VALUE|key=value",
    ),
    Case(
        "set_unknown_key",
        lambda t, m: ["train", _yaml(t, "seed: 0\n"), "--set", "train.max_stepz=3"],
        r"max_stepz.*did you mean 'max_steps'",
    ),
    # data
    Case(
        "dataset_file_missing",
        lambda t, m: _train(t, m, data=str(t / "missing.jsonl")),
        r"not found.*missing\.jsonl",
    ),
    Case(
        "row_missing_field",
        lambda t, m: _train(t, m, data=_rows_file(t, GOOD_ROW + "\n" + json.dumps({"instruction": "x"}) + "\n")),
        r"data\.jsonl.*line 2.*output",
    ),
    Case(
        "row_field_wrong_type",
        lambda t, m: _train(t, m, data=_rows_file(t, GOOD_ROW + "\n" + json.dumps({"instruction": 7, "output": "y"}))),
        r"data\.jsonl.*line 2.*instruction",
    ),
    Case(
        "row_not_json",
        lambda t, m: _train(t, m, data=_rows_file(t, GOOD_ROW + "\n{not json\n")),
        r"data\.jsonl.*line 2",
    ),
    Case("empty_dataset", lambda t, m: _train(t, m, data=_rows_file(t, "")), r"data\.jsonl.*no usable examples"),
    Case(
        "unknown_builtin_dataset",
        lambda t, m: _train(t, m, data="stdlib-instrukt"),
        r"stdlib-instrukt.*did you mean 'stdlib-instruct'",
    ),
    Case("unknown_data_format", lambda t, m: _train(t, m, "data.format=alpacca"), r"data\.format.*alpacca"),
    # models and methods
    Case(
        "model_path_missing",
        lambda t, m: _train(t, lambda arch: t / "no-such-model"),
        r"model directory not found.*no-such-model",
    ),
    Case(
        "model_dir_without_config",
        lambda t, m: _train(t, lambda arch: (t / "empty-model").mkdir() or t / "empty-model"),
        r"empty-model.*config\.json",
    ),
    Case("unknown_method", lambda t, m: _train(t, m, "method.name=lorra"), r"lorra.*did you mean 'lora'"),
    Case("unknown_method_option", lambda t, m: _train(t, m, "method.rank=4"), r"rank.*(lora|option)"),
    Case(
        "target_modules_absent",
        lambda t, m: _train(t, m, "method.target_modules=[q_proj,v_proj]"),
        r"q_proj.*(not found|absent|no module|not in)",
    ),
    Case(
        "method_not_for_architecture",
        lambda t, m: _train(t, m, "method.name=adaption_prompt"),
        r"could not apply ADAPTION_PROMPT to this gpt_bigcode model",
    ),
    Case(
        "sequence_longer_than_the_model",
        lambda t, m: _train(t, m, "data.max_length=100000"),
        r"max_length=100000 is above the 512 positions",
    ),
    Case("quantisation_bits_unsupported", lambda t, m: _train(t, m, "method.name=qlora", "method.bits=3"), r"bits"),
    Case(
        "quantisation_on_a_full_tune",
        lambda t, m: _train(t, m, "method.name=full", "model.quantization=4bit"),
        r"full cannot train on a quantized base",
    ),
    Case(
        "baseline_cannot_be_trained",
        lambda t, m: _train(t, m, "method.name=icl"),
        r"icl.*(train|prompting)",
    ),
    # evaluation
    Case(
        "k_larger_than_n",
        lambda t, m: ["eval", str(m("gpt_bigcode")), "--tasks", "humaneval", "--n", "2", "--k", "1,5"],
        r"k=\[5\] needs at least.*--n",
    ),
    Case(
        "unknown_task",
        lambda t, m: ["eval", str(m("gpt_bigcode")), "--tasks", "humaneva"],
        r"'humaneva' \(did you mean 'humaneval'\?\)",
    ),
    Case(
        "task_data_missing",
        lambda t, m: ["eval", str(m("gpt_bigcode")), "--tasks", "conala", "--task-data", f"conala={t / 'gone.jsonl'}"],
        r"gone\.jsonl",
    ),
    Case(
        "eval_of_unfinished_run",
        lambda t, m: ["eval", _unfinished_run(t)],
        r"did not complete",
    ),
    Case("bad_k_list", lambda t, m: ["eval", str(m("gpt_bigcode")), "--k", "1,x"], r"comma-separated integers"),
    # studies
    Case(
        "study_unknown_method",
        lambda t, m: _study(t, m, "methods: [lorra]\ndatasets: [stdlib-instruct]\n"),
        r"lorra.*did you mean 'lora'",
    ),
    Case("study_without_datasets", lambda t, m: _study(t, m, "methods: [lora]\n"), r"datasets"),
    Case(
        "study_unknown_task",
        lambda t, m: _study(t, m, STUDY_OK + "eval:\n  tasks: [humaneval-plus-plus]\n"),
        r"humaneval-plus-plus",
    ),
    Case(
        "study_dataset_file_missing",
        lambda t, m: _study(t, m, f"methods: [lora]\ndatasets: [{t / 'absent.jsonl'}]\n"),
        r"absent\.jsonl",
    ),
    Case(
        "study_model_missing",
        lambda t, m: _study(t, lambda arch: t / "no-model", STUDY_OK + "train:\n  max_steps: 1\n"),
        r"failed.*model directory not found.*no-model",
    ),
    # the sandbox
    Case("exec_file_missing", lambda t, m: ["exec", str(t / "ghost.py")], r"not found.*ghost\.py"),
    Case(
        "exec_unknown_language",
        lambda t, m: ["exec", _rows_file(t, "print(1)", "prog.rb")],
        r"prog\.rb.*--language",
    ),
    Case(
        "exec_language_not_supported",
        lambda t, m: ["exec", _rows_file(t, "print(1)", "prog.py"), "--language", "cobol"],
        r"unsupported language 'cobol'",
    ),
    Case(
        "exec_unknown_isolation",
        lambda t, m: ["exec", _rows_file(t, "print(1)", "prog.py"), "--isolation", "docker"],
        r"isolation must be auto, bwrap, rlimits, not 'docker'",
    ),
    # every other command
    Case("methods_unknown_name", lambda t, m: ["methods", "lorra"], r"unknown method 'lorra'.*did you mean 'lora'"),
    Case("bootstrap_bad_tokens", lambda t, m: ["bootstrap", "--tokens", "-5"], r"tokens"),
    Case("data_stats_unknown", lambda t, m: ["data", "stats", "stdlib-instrukt"], r"stdlib-instrukt"),
    Case(
        "score_samples_missing", lambda t, m: ["score", "humaneval", str(t / "none.jsonl")], r"not found.*none\.jsonl"
    ),
    Case(
        "score_unknown_task",
        lambda t, m: ["score", "humaneva", _rows_file(t, '{"task_id": "x", "completion": ""}\n')],
        r"'humaneva' \(did you mean 'humaneval'\?\)",
    ),
    Case("study_status_missing_config", lambda t, m: ["study", "status", str(t / "s.yaml")], r"not found.*s\.yaml"),
    Case("study_export_no_config", lambda t, m: ["study", "export"], r"needs a study config"),
    Case("report_of_an_empty_directory", lambda t, m: ["report", str(t)], r"results\.sqlite"),
    Case("export_not_a_run", lambda t, m: ["export", str(t), "--merged", str(t / "out")], r"no run\.json"),
    Case("doctor_config_missing", lambda t, m: ["doctor", str(t / "gone.yaml")], r"not found.*gone\.yaml"),
    Case(
        "study_unknown_isolation",
        lambda t, m: [*_study(t, m, STUDY_OK), "--isolation", "docker"],
        r"eval\.isolation.*'auto', 'bwrap' or 'rlimits'",
    ),
    Case(
        "estimate_unknown_method",
        lambda t, m: ["estimate", "--model", str(m("gpt_bigcode")), "--method", "lorra"],
        r"lorra.*did you mean 'lora'",
    ),
    Case(
        "estimate_bad_dtype",
        lambda t, m: ["estimate", "--model", str(m("gpt_bigcode")), "--dtype", "fp8"],
        r"dtype.*fp8|fp8.*dtype",
    ),
]

# Commands a user can call with nothing wrong to give: their other failures are OSErrors, which
# share the boundary (see test_disk_full_while_writing_results_keeps_what_was_recorded).
NO_BAD_INPUT = {"tasks", "data list"}


def test_every_command_has_a_bad_input_case(tmp_path):
    from codepeft.cli import data_app

    def names(group, prefix=""):
        return {prefix + (c.name or c.callback.__name__) for c in group.registered_commands}

    commands = names(app) | names(data_app, "data ")
    covered = set()
    for case in CASES:
        argv = case.argv(tmp_path, lambda arch: tmp_path / arch)
        covered.add(" ".join(argv[:2]) if argv[0] == "data" else argv[0])
    assert commands - NO_BAD_INPUT <= covered, sorted(commands - NO_BAD_INPUT - covered)


def test_bubblewrap_asked_for_where_it_cannot_run(tmp_path, monkeypatch):
    from codepeft.execution import sandbox

    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    program = _rows_file(tmp_path, "print(1)", "prog.py")
    result = runner.invoke(app, ["exec", program, "--isolation", "bwrap"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), output
    assert "bubblewrap is not installed" in output and "--isolation rlimits" in output and "Traceback" not in output


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_message(case, tmp_path, tiny_model):
    result = runner.invoke(app, case.argv(tmp_path, tiny_model))
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}: {output}"
    assert "Traceback" not in output
    assert re.search(case.message, output, re.I | re.S), output


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


def test_disk_full_while_writing_results_keeps_what_was_recorded(tmp_path, tiny_model, monkeypatch):
    """Results of a finished task stay as they were when the disk fills up writing the next."""
    out = tmp_path / "eval"
    model = str(tiny_model("gpt_bigcode"))
    first = runner.invoke(app, ["eval", model, "--tasks", "stdlib-instruct", "--limit", "2", "--max-new-tokens", "8",
                                "--output-dir", str(out)])  # fmt: skip
    assert first.exit_code == 0, first.output
    recorded = (out / "stdlib-instruct.json").read_bytes()

    real_write = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.parent == out:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    second = runner.invoke(app, ["eval", model, "--tasks", "humaneval", "--limit", "2", "--max-new-tokens", "8",
                                 "--output-dir", str(out)])  # fmt: skip
    monkeypatch.undo()
    output = " ".join(second.output.split())
    assert second.exit_code != 0 and isinstance(second.exception, SystemExit), second.exception
    assert "No space left on device" in output and "Traceback" not in output
    assert (out / "stdlib-instruct.json").read_bytes() == recorded
