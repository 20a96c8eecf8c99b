"""HumanEvalPack on the released data, in every language the sandbox runs: the canonical solution
passes all 164 problems, the hand-written bug and the empty completion pass none; prompts follow
the BigCode harness; a missing toolchain is said, not scored 0."""

from __future__ import annotations

import os

import pytest

from codepeft.execution import SandboxPool, get_language
from codepeft.tasks import Prompt, get_task, render_prompt
from codepeft.tasks.humanevalpack import HELPER, LANGUAGES, close_function, go_program
from codepeft.tasks.scoring import score_execution

# Go/95's reference reads the first keys of a Go map, whose order Go randomises on every run:
# it passes on some runs only (documented in docs/tasks.md).
ORDER_DEPENDENT_REFERENCES = {"Go/95"}
# Rust/32's tests draw random polynomials from an unseeded generator: its bug passes now and then,
# and its reference (a Newton iteration) now and then does not.
RANDOM_TESTS = {"Rust/32"}


def _passed(task, problems, completions, pool) -> list[str]:
    result = score_execution(task, problems, completions, [1], pool)
    return [r["task_id"] for r in result["problems"] if r["passed"]]


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_canonical_passes_everything_bug_and_empty_pass_nothing(language):
    synth, fix = get_task(f"humanevalsynthesize-{language}"), get_task(f"humanevalfix-{language}")
    if why := synth.unavailable():
        if os.environ.get("CI"):  # CI installs every toolchain: a missing one is a failure there
            pytest.fail(why)
        pytest.skip(why)
    problems = synth.problems()
    assert len(problems) == 164
    if os.environ.get("CI") and not os.environ.get("CODEPEFT_FULL_PACK"):
        # CI's time budget: every third problem (55 a language, ~1/3 of the time); a full run
        # here, or with CODEPEFT_FULL_PACK=1, checks all 164
        problems = problems[::3]
    pool = SandboxPool(workers=2)
    failed = {p["task_id"] for p in problems} - set(
        _passed(synth, problems, [[p["canonical_solution"]] for p in problems], pool)
    )
    assert failed <= ORDER_DEPENDENT_REFERENCES | RANDOM_TESTS
    assert set(_passed(fix, problems, [[p["buggy_solution"]] for p in problems], pool)) <= RANDOM_TESTS
    assert _passed(synth, problems, [[""] for _ in problems], pool) == []


def test_fix_prompts_show_tests_or_docstring_and_follow_the_harness_formats():
    fix, docs = get_task("humanevalfix-cpp"), get_task("humanevalfixdocs-cpp")
    problem = fix.problems()[0]
    p, d = fix.prompt(problem), docs.prompt(problem)
    assert p.answer_prefix == problem["declaration"] and problem["test"] in p.context
    assert d.answer_prefix == problem["prompt"] and problem["test"] not in d.context
    assert p.instruction == "Fix bugs in has_close_elements."
    # instruct: context, instruction, then the code to continue; octocoder: instruction first
    instruct = render_prompt(p, "instruct")
    assert instruct.startswith(p.context) and instruct.endswith(f"{p.instruction}\n\n{p.answer_prefix}")
    assert render_prompt(p, "octocoder").startswith(f"Question: {p.instruction}\n{p.context}")
    synth = get_task("humanevalsynthesize-js").prompt(get_task("humanevalsynthesize-js").problems()[0])
    assert synth.context is None and render_prompt(synth, "instruct") == f"{synth.instruction}\n\n{synth.answer_prefix}"


def test_completions_are_cut_where_the_function_closes_or_closed_where_they_stop():
    assert close_function("  return 1;\n}\n\nint main(){}\n", 1) == "  return 1;\n}"
    assert close_function("    return a;\n    }\n}\nextra", 2) == "    return a;\n    }\n}"
    assert close_function("  if (x) {\n    return 1;", 1) == "  if (x) {\n    return 1;\n}\n}\n"
    assert close_function("    return x\n", 0) == "    return x\n"


def test_go_and_rust_keep_the_helpers_a_solution_defines_after_it():
    go = "    return helper(x)\n}\n\nfunc helper(x int) int {\n    return x\n}\n\nfunc TestMain(t *testing.T) {}\n"
    assert close_function(go, 1, HELPER["go"]) == go.split("\n\nfunc TestMain")[0]
    rust = "    Kind::A\n}\n\n#[derive(Debug)]\npub enum Kind {\n    A,\n}\nfn main() {}\n"
    assert close_function(rust, 1, HELPER["rust"]) == rust.split("\nfn main")[0]
    assert close_function("  return 1;\n}\nint helper() {", 1, HELPER["go"]) == "  return 1;\n}"


def test_go_programs_import_what_the_code_and_tests_use_and_nothing_else():
    code = 'import (\n    "math"\n    "fmt"\n)\n// strings. in a comment\n'
    code += "func F(x float64) float64 {\n    return math.Abs(x)\n}\n"
    test = "func TestF(t *testing.T) {\n    assert := assert.New(t)\n    assert.Equal(1.0, F(-1))\n}\n"
    setup = 'package main\n\nimport (\n    "testing"\n    "github.com/stretchr/testify/assert"\n)\n'
    program = go_program(code, test, setup)
    imports = program.split("import (\n")[1].split(")")[0].split()
    assert imports == ['"math"', '"testing"', '"github.com/stretchr/testify/assert"']
    assert program.count("package main") == 1 and "func F(" in program


def test_a_request_puts_the_instruction_before_its_context():
    p = Prompt(instruction="Fix it.", answer_prefix="def f():\n", context="def f(): return 2")
    assert p.request == "Fix it.\ndef f(): return 2"


def test_a_missing_toolchain_is_named_before_anything_loads(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from codepeft.cli import app

    monkeypatch.setattr(type(get_language("cpp")), "needs", (("g++-absent", "apt-get install g++"),))
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"task_id": "CPP/0", "completion": ""}\n')
    result = CliRunner().invoke(app, ["score", "humanevalsynthesize-cpp", str(samples)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "humanevalsynthesize-cpp: cpp programs need g++-absent (apt-get install g++)" in output


def test_explain_describes_the_reference_then_scores_code_written_from_the_description():
    from codepeft.generation import GenerationBackend, GenerationSettings
    from codepeft.tasks import EvalContext

    task = get_task("humanevalexplain-js")
    problems = task.problems()[:2]
    describe = task.describe_prompt(problems[0])
    assert problems[0]["canonical_solution"] in describe.instruction
    assert problems[0]["docstring"].strip() not in describe.instruction
    assert f"at most {len(problems[0]['docstring'])} characters" in describe.instruction

    class Scripted(GenerationBackend):
        """Stage 1: a description with code in it; stage 2: the reference solution."""

        def __init__(self):
            self.calls: list[list[str]] = []

        def generate(self, prompts, settings):
            self.calls.append(prompts)
            if len(self.calls) == 1:
                return [["Checks pairs.\n```js\nreturn 1;\n```"] * settings.n for _ in prompts]
            return [
                [next(p["canonical_solution"] for p in problems if p["declaration"] in prompt)] for prompt in prompts
            ]

    backend = Scripted()
    ctx = EvalContext(
        backend=backend,
        settings=GenerationSettings(n=2),
        ks=[1],
        pool=SandboxPool(workers=2),
        fmt="instruct",
        tokenizer=None,
        prompter=lambda prompts: [render_prompt(p, "instruct") for p in prompts],
    )
    result = task.run(problems, ctx)
    assert result["scores"]["pass@1"]["value"] == 1.0
    assert all(s["description"] == "Checks pairs." for r in result["problems"] for s in r["samples"])
    assert all("Checks pairs." in prompt for prompt in backend.calls[1]) and len(backend.calls[1]) == 4
