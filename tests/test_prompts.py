"""Prompts for instruct models (EvalPlus's convention) and the code taken from their answers.

A chat model gets the problem's code in a code block of the user turn and an answer opened
with a code block it writes whole; the code is taken from the block and used whole when it
defines the entry point. These tests pin the layout, the extraction on tricky answers (run in
the sandbox where it matters), `--prompt-format auto` and `codepeft tasks --show-prompt`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from codepeft.cli import app
from codepeft.data.formats import code_answer_start, render
from codepeft.errors import CodepeftError
from codepeft.evaluation import resolve_format
from codepeft.generation import GenerationBackend, GenerationSettings
from codepeft.tasks import get_task, render_prompt
from codepeft.tasks.base import EvalContext, chat_turn, defines, extract_code, generate

runner = CliRunner()


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model("qwen2"))  # the tiny qwen2 carries a ChatML template


def _problem(task_id: str) -> dict:
    return next(p for p in get_task("humaneval").problems() if p["task_id"] == task_id)


def test_the_chat_layout_puts_the_code_in_the_user_turn_and_opens_the_answer(chat_tokenizer):
    task, problem = get_task("humaneval"), _problem("HumanEval/0")
    user, start = chat_turn(task.prompt(problem))
    assert "```python\nfrom typing import List\n\n\ndef has_close_elements(" in user
    assert user.rstrip().endswith('"""\n```')
    assert start == code_answer_start("python") == "```python\n"
    text = render_prompt(task.prompt(problem), "chat", chat_tokenizer)
    assert text.endswith("<|im_start|>assistant\n" + start)
    # the plain layout is still the bare completion prompt
    assert render_prompt(task.prompt(problem), "plain") == problem["prompt"]


def test_code_to_fix_is_fenced_and_prose_answers_are_not_opened(chat_tokenizer):
    fix = get_task("humanevalfix-js")
    user, start = chat_turn(fix.prompt(fix.problems()[0]))
    assert user.startswith("Fix bugs in hasCloseElements.\n```javascript\n")
    assert start == "```javascript\n" and "self-contained JavaScript script" in user
    explain = get_task("humanevalexplain-python")
    user, start = chat_turn(explain.describe_prompt(explain.problems()[0]))
    assert start == "" and "Provide a concise natural language description" in user
    security = get_task("cyberseceval-instruct-python")
    user, start = chat_turn(security.prompt(security.problems()[0]))
    assert start == "" and user == security.problems()[0]["test_case_prompt"]


HAS_CLOSE = """def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for i, a in enumerate(numbers):
        for b in numbers[i + 1 :]:
            if abs(a - b) < threshold:
                return True
    return False
"""


@pytest.mark.parametrize(
    ("answer", "expected_in", "expected_out"),
    [
        # the whole function without the prompt's import: the prompt's head (import) goes first
        (f"```python\n{HAS_CLOSE}```", ["from typing import List\n", HAS_CLOSE], []),
        # top-level calls and prints after the function are not part of the solution
        (f"```python\n{HAS_CLOSE}\nprint(has_close_elements([1.0], 0.5))\nassert True\n```", [HAS_CLOSE], ["print("]),
        # cut short by the token limit inside a second function: the unfinished tail is dropped
        (f"```python\n{HAS_CLOSE}\ndef helper(x):\n    return [x for x in", [HAS_CLOSE], ["def helper"]),
        # a helper after the function is kept
        (f"```python\n{HAS_CLOSE}\nLIMIT = 3\n\ndef helper(x):\n    return x\n```", ["LIMIT = 3", "def helper(x)"], []),
        # only a body in the block: it continues the prompt's function
        ("```python\n    return False\n```", ['"""\n    return False\n'], []),
    ],
    ids=["no-imports", "top-level-calls", "cut-short", "helper-kept", "body-only"],
)
def test_code_is_taken_from_tricky_answers(answer, expected_in, expected_out):
    task, problem = get_task("humaneval"), _problem("HumanEval/0")
    code = task.code_of(problem, answer)
    for text in expected_in:
        assert text in code
    for text in expected_out:
        assert text not in code
    compile(code, "answer", "exec")


def test_an_answer_that_repeats_the_code_it_was_given_is_the_whole_program():
    """Without an entry point (security scenarios), an answer that starts with the given code is
    used as it is, not appended to it."""
    given = "import os\n\ndef handler(path):\n"
    whole = "import os\n\ndef handler(path):\n    return open(path).read()\n"
    assert extract_code(f"```python\n{whole}```", given) == whole
    assert extract_code("```python\n    return 1\n```", given) == given + "    return 1\n"


@pytest.mark.parametrize(
    ("answer", "expected_in", "expected_out"),
    [
        # repeating the prompt's import, the whole function is still sanitised
        (f"```python\nfrom typing import List\n{HAS_CLOSE}\nprint(1)\n```", [HAS_CLOSE], ["print(1)"]),
    ],
)
def test_answers_repeating_the_given_code_are_sanitised_too(answer, expected_in, expected_out):
    task, problem = get_task("humaneval"), _problem("HumanEval/0")
    code = task.code_of(problem, answer)
    assert all(t in code for t in expected_in) and not any(t in code for t in expected_out)


def test_whole_answers_that_pass_in_the_sandbox():
    """The reference solutions, written as a chat model writes them (whole functions, no
    imports, a demo call at the end, the fence left open), pass; wrong ones do not."""
    from codepeft.execution import SandboxPool

    sandbox_pool = SandboxPool(workers=2)
    task = get_task("humaneval")
    problems = task.problems()[:6]
    answers = []
    for p in problems:
        header = p["prompt"][p["prompt"].index(f"def {p['entry_point']}(") :]
        answers.append([f"```python\n{header}{p['canonical_solution']}\nprint({p['entry_point']})\n"])
    result = task.score(problems, answers, [1], sandbox_pool)
    assert result["scores"]["pass@1"]["value"] == 1.0
    wrong = [[f"```python\ndef {p['entry_point']}(*args):\n    return None\n```"] for p in problems]
    assert task.score(problems, wrong, [1], sandbox_pool)["scores"]["pass@1"]["value"] == 0.0


@pytest.mark.parametrize(
    ("language", "code", "name", "whole"),
    [
        ("python", "async def f(x):\n    pass", "f", True),
        ("python", "x = f(3)", "f", False),
        ("javascript", "const hasClose = (numbers, t) => {\n  return 1;\n}", "hasClose", True),
        ("javascript", "function hasClose(a) { return 1 }", "hasClose", True),
        ("javascript", "console.log(hasClose([1], 2));", "hasClose", False),
        ("java", "class Solution {\n    public boolean hasClose(List<Double> a, double t) {\n", "hasClose", True),
        ("java", "return hasClose(a, t);", "hasClose", False),
        ("cpp", "bool has_close(vector<float> numbers, float threshold){\n", "has_close", True),
        ("go", "func HasClose(numbers []float64, threshold float64) bool {", "HasClose", True),
        ("rust", "fn has_close(numbers: Vec<f32>, threshold: f32) -> bool {", "has_close", True),
        ("rust", "let x = has_close(v, 0.3);", "has_close", False),
    ],
)
def test_a_definition_is_recognised_in_each_language(language, code, name, whole):
    assert defines(code, name, language) is whole


def test_a_whole_java_answer_keeps_the_imports_it_was_given():
    pack = get_task("humanevalsynthesize-java")
    problem = pack.problems()[0]
    body = problem["canonical_solution"]
    whole = f"class Solution {{\n    public boolean hasCloseElements(List<Double> numbers, double threshold) {{{body}"
    answer = f"```java\n{whole}\n```"
    code = pack.code_of(problem, answer)
    assert code == f"import java.util.*;\nimport java.lang.*;\n{whole}\n"
    assert extract_code(answer, "class Solution {\n", "hasCloseElements", "java") == f"{whole}\n"  # none given


class Scripted(GenerationBackend):
    name = "scripted"

    def __init__(self, answer: str):
        self.answer, self.calls = answer, []

    def generate(self, prompts, settings, progress=True):
        self.calls.append(settings.stop)
        return [[self.answer] * settings.n for _ in prompts]


def test_generation_for_opened_blocks_stops_at_the_fence_and_gives_it_back():
    backend = Scripted("    return 1\n")
    ctx = EvalContext(backend, GenerationSettings(stop=["\ndef"]), [1], None, "chat", None, None)
    out = generate(ctx, ["<|im_start|>assistant\nBelow:\n```python\n"], GenerationSettings(n=2, stop=["\ndef"]))
    assert out == [["```python\n    return 1\n"] * 2]
    assert "\n```" in backend.calls[-1] and "\ndef" not in backend.calls[-1]  # helpers may follow the function
    out = generate(ctx, ["Question: x\n\nAnswer:\n"], GenerationSettings(stop=["\ndef"]))
    assert out == [["    return 1\n"]] and backend.calls[-1] == ["\ndef"]
    with pytest.raises(CodepeftError, match="mixes"):
        generate(ctx, ["```python\n", "plain"], GenerationSettings())


def test_auto_format_is_chat_for_instruct_models_and_the_training_format_for_runs(chat_tokenizer, tiny_tokenizer):
    model = {"kind": "model"}
    assert resolve_format(None, model, chat_tokenizer) == "chat"
    assert resolve_format("auto", model, tiny_tokenizer) == "plain"  # no chat template: a base model
    assert resolve_format(None, {"kind": "run", "format": "octocoder"}, chat_tokenizer) == "octocoder"
    assert resolve_format("alpaca", model, chat_tokenizer) == "alpaca"
    with pytest.raises(CodepeftError, match="unknown prompt format 'chatml'"):
        resolve_format("chatml", model, chat_tokenizer)


def test_chat_training_examples_are_laid_out_as_chat_evaluation_asks(chat_tokenizer):
    """A code answer in chat training data sits in the same opened block that evaluation pre-fills,
    and the match task's prompt is the training prompt."""
    ex = {"instruction": "Sort a list", "input": "", "output": "sorted(xs)\n", "language": "python"}
    prompt, response = render("chat", ex, chat_tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n" + code_answer_start("python"))
    assert response == "sorted(xs)\n```"
    prose = {"instruction": "Why?", "input": "", "output": "Because."}
    assert render("chat", prose, chat_tokenizer) == (
        chat_tokenizer.apply_chat_template(
            [{"role": "user", "content": "Why?"}], tokenize=False, add_generation_prompt=True
        ),
        "Because.",
    )
    from codepeft.config import DatasetSpec
    from codepeft.data import load_examples

    conala = load_examples(DatasetSpec(source="conala", split="test"), "test")[0]
    assert conala["language"] == "python"  # the code datasets say their answers are code
    match = get_task("conala")
    assert match.text_prompt(match.problems()[0], "chat", chat_tokenizer) == render("chat", conala, chat_tokenizer)[0]


def test_show_prompt_prints_what_the_model_is_given(tiny_model):
    chat_model, base_model = tiny_model("qwen2"), tiny_model("gpt_bigcode")
    result = runner.invoke(app, ["tasks", "humaneval", "--show-prompt", str(chat_model), "--problem", "HumanEval/2"])
    assert result.exit_code == 0, result.output
    assert "HumanEval/2, prompt format chat" in result.output
    assert "<|im_start|>user\nWrite a Python function `truncate_number(number: float)`" in result.output
    assert result.output.rstrip().endswith("```python")
    result = runner.invoke(app, ["tasks", "humaneval", "--show-prompt", str(base_model)])
    assert result.exit_code == 0 and "prompt format plain" in result.output
    assert result.output.rstrip().endswith('"""')  # the bare completion prompt of HumanEval/0
    bad = runner.invoke(app, ["tasks", "humaneval", "--show-prompt", str(base_model), "--problem", "400"])
    assert bad.exit_code == 2 and "there is no problem 400" in bad.output
    bad = runner.invoke(app, ["tasks", "humaneval"])
    assert bad.exit_code == 2 and "name a task and a model" in bad.output


def test_a_run_is_shown_its_training_format(tiny_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = {"data": {"format": "alpaca"}}
    (run / "run.json").write_text(json.dumps({"config": config, "base_model": str(tiny_model("qwen2"))}))
    result = runner.invoke(app, ["tasks", "mbpp", "--show-prompt", str(run)])
    assert result.exit_code == 0, result.output
    assert "prompt format alpaca" in result.output and "### Instruction:\nWrite a Python function" in result.output
