"""`codepeft doctor` and the isolation policy: what the machine supports, what a config needs, and
that generated code never runs below namespaces without the user being told (or asking for it)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from codepeft.cli import app
from codepeft.execution import levels, sandbox
from codepeft.execution.sandbox import Isolation

runner = CliRunner()


@pytest.fixture
def no_bwrap(monkeypatch):
    """This machine as one without bubblewrap (which a root user with apt-get could install)."""
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real(name, *a, **k))
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    monkeypatch.setattr(levels, "bwrap_works", lambda: False)
    monkeypatch.setattr(levels, "_warned", set())


def _study_config(tmp_path, tasks: list[str], **eval_settings) -> str:
    config = {
        "name": "d",
        "output_dir": str(tmp_path / "study"),
        "models": [{"name_or_path": "default", "label": "m"}],
        "methods": [{"name": "zero-shot"}],
        "datasets": [{"name": "stdlib", "train": [{"source": "stdlib-instruct"}]}],
        "eval": {"tasks": tasks, "limit": 1, **eval_settings},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_doctor_lists_what_the_machine_offers():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in ("isolation: bwrap", "isolation: rlimits", "isolation: used", "bitsandbytes", "CUDA GPU", "vLLM"):
        assert name in text
    for language in ("python", "java", "javascript", "cpp", "go", "rust"):
        assert f"language: {language}" in text
    assert "free disk" in text and "cache" in text
    assert "Python 3." in text  # a toolchain's version, not just "found"


def test_doctor_fails_a_config_whose_language_is_missing(tmp_path, monkeypatch):
    from codepeft.execution import LANGUAGES

    path = _study_config(tmp_path, ["humanevalsynthesize-java"])
    monkeypatch.setattr(LANGUAGES["java"], "missing", lambda: "java programs need javac (apt-get install x)")
    result = runner.invoke(app, ["doctor", path])
    assert result.exit_code == 2
    assert "needs what the machine lacks: language: java" in " ".join(result.output.split())
    # the study makes the same check before its first cell, and runs nothing
    study = runner.invoke(app, ["study", path, "--no-report"])
    assert study.exit_code == 2 and "language: java" in study.output
    assert not (tmp_path / "study" / "cells").exists()


def test_doctor_passes_a_config_the_machine_can_run(tmp_path):
    result = runner.invoke(app, ["doctor", _study_config(tmp_path, ["humaneval", "stdlib-instruct-loss"])])
    assert result.exit_code == 0, result.output
    assert "yes" in result.output  # python and the isolation are marked as needed


def test_weak_isolation_is_never_silent(no_bwrap, tmp_path, capsys):
    program = tmp_path / "p.py"
    program.write_text("print('hi')\n")
    result = runner.invoke(app, ["exec", str(program)])
    assert result.exit_code == 0, result.output
    assert '"isolation": "rlimits"' in result.stdout
    warning = " ".join(result.stderr.split())
    assert "warning: generated programs run at isolation 'rlimits'" in warning
    assert "bubblewrap is not installed" in warning and "Not contained:" in warning and "the disk" in warning
    # asking for namespaces refuses instead of weakening
    refused = runner.invoke(app, ["exec", str(program), "--isolation", "bwrap"])
    assert refused.exit_code == 2 and "bubblewrap is not installed" in refused.output


def test_the_warning_names_what_the_kernel_leaves_open(monkeypatch):
    monkeypatch.setattr(levels, "confinement", lambda: {})  # no Landlock, no seccomp
    gaps = " ".join(levels.uncontained("rlimits"))
    assert "your files" in gaps and "the network" in gaps and "other processes" in gaps
    monkeypatch.setattr(levels, "confinement", lambda: {"landlock": True, "seccomp": True, "landlock_abi": 7})
    assert levels.uncontained("rlimits") == ["the disk (only each file's size is capped, not how many it writes)"]
    assert levels.uncontained("bwrap") == [] and levels.weak_warning("bwrap") is None


def test_a_study_requires_namespaces_where_bubblewrap_can_be_installed(no_bwrap, monkeypatch, tmp_path):
    from codepeft.study import load_study
    from codepeft.study.runner import preflight

    monkeypatch.setattr(levels, "is_root", lambda: True)
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: "/usr/bin/apt-get" if name == "apt-get" else real(name, *a, **k)
    )
    path = _study_config(tmp_path, ["humaneval"])
    result = runner.invoke(app, ["study", path, "--no-report"])
    assert result.exit_code == 2
    assert "bubblewrap (the namespace sandbox) is not installed but can be" in " ".join(result.output.split())
    assert not (tmp_path / "study" / "cells").exists()
    # accepting the weaker level is explicit, and warned
    assert preflight(load_study(path, ["eval.isolation=rlimits"])) == "rlimits"
    # where it cannot be installed (not root), auto falls back to rlimits with the warning
    monkeypatch.setattr(levels, "is_root", lambda: False)
    assert levels.study_isolation("auto") is Isolation.RLIMITS
    # a study whose tasks run no code needs no sandbox at all
    assert preflight(load_study(_study_config(tmp_path, ["stdlib-instruct-loss"]), [])) == "auto"


def test_the_isolation_level_does_not_make_a_cell_run_again():
    from codepeft.study.specs import spec_changed, spec_text

    spec = {"cell_dir": "c", "eval": {"n": 1}, "isolation": "bwrap"}
    assert not spec_changed(spec_text(spec), {**spec, "isolation": "rlimits"})
    assert spec_changed(spec_text(spec), {**spec, "eval": {"n": 2}})


def test_doctor_checks_a_training_config_for_bitsandbytes(tmp_path, monkeypatch):
    import importlib.util

    from codepeft import doctor

    config = tmp_path / "run.yaml"
    config.write_text("method:\n  name: qlora\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    result = runner.invoke(app, ["doctor", str(config)])
    assert result.exit_code == 2 and "needs what the machine lacks: bitsandbytes" in " ".join(result.output.split())
    config.write_text("method:\n  name: lora\n")  # LoRA on a full-precision base does not need it
    assert runner.invoke(app, ["doctor", str(config)]).exit_code == 0
