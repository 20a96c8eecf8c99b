"""The extension contracts: docs/extending.md's worked example runs as written, and the
registries refuse mistakes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import tiny_run_config

import codepeft.methods.registry as method_registry
import codepeft.tasks.registry as task_registry
from codepeft.errors import CodepeftError

DOC = Path(__file__).parent.parent / "docs" / "extending.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def fresh_registries(monkeypatch):
    """The docs' registrations go into copies of the registries, gone after the test."""
    method_registry._ensure_loaded()
    monkeypatch.setattr(task_registry, "TASKS", dict(task_registry.TASKS))
    monkeypatch.setattr(method_registry, "REGISTRY", dict(method_registry.REGISTRY))


def test_the_worked_task_is_one_module_and_one_registry_line(tmp_path, fresh_registries):
    task_module, registry_line, _ = _blocks()
    assert registry_line.strip().count("\n") == 0  # one line
    namespace: dict = {}
    exec(compile(task_module, "docs/extending.md (task)", "exec"), namespace)
    exec(registry_line, {**namespace, "register_task": task_registry.register_task})

    from codepeft.evaluation import score_file

    task = task_registry.get_task("squares")
    assert (
        task.kind == "execution"
        and task.needs_sandbox
        and [p["task_id"] for p in task.problems()]
        == [
            "Squares/0",
            "Squares/1",
        ]
    )
    samples = tmp_path / "samples.jsonl"
    rows = [
        {"task_id": "Squares/0", "completion": "    return x * x\n"},
        {"task_id": "Squares/1", "completion": "    return x * x\n"},  # wrong: that is a square
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score_file("squares", samples, [1], tmp_path / "out")
    assert result["scores"]["pass@1"]["value"] == pytest.approx(0.5)
    assert [r["passed"] for r in result["problems"]] == [1, 0]


def test_the_worked_method_trains_through_the_registry(tmp_path, tiny_model, train_file, fresh_registries):
    _, _, method_module = _blocks()
    exec(compile(method_module, "docs/extending.md (method)", "exec"), {})
    from codepeft import train

    method = method_registry.get_method("lora_attention")
    assert method.trains and method.mergeable and method.options({"r": 8})["r"] == 8
    with pytest.raises(CodepeftError, match="valid options: r, target_modules"):
        method.options({"rr": 8})
    result = train(tiny_run_config(tiny_model, train_file, "gpt_bigcode", "method.name=lora_attention"), tmp_path / "r")
    trained = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and "c_attn" in n for n in trained)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["method"]["family"] == "lora"


def test_registries_refuse_a_name_already_taken(fresh_registries):
    lora = method_registry.get_method("lora")
    with pytest.raises(CodepeftError, match="method 'lora' is already registered"):
        method_registry.register_method(lora)
    with pytest.raises(CodepeftError, match="'zero-shot' is already registered"):
        method_registry.register_method(method_registry.Method(**{**vars(lora), "name": "zero-shot"}))
    with pytest.raises(CodepeftError, match="task 'humaneval' is already registered"):
        task_registry.register_task("humaneval", lambda: None)


def test_methods_take_keywords_and_tasks_a_known_kind():
    from codepeft.tasks.base import Task

    with pytest.raises(TypeError):
        method_registry.Method("x", "lora", "style", 1e-4, {}, None, set)  # positional: refused
    with pytest.raises(CodepeftError, match="kind 'generation' is not one of execution, robustness"):
        Task(name="t", description="d", metrics=(), source="s", kind="generation")
    with pytest.raises(ValueError):
        method_registry.Method(
            name="x", family="lorra", style="s", learning_rate=1e-4, defaults={}, apply=None, option_names=set
        )
