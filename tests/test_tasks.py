"""Tasks: canonical solutions pass, empty ones fail, every shipped bug fails its tests,
post-processing on tricky inputs, match and loss metrics by hand."""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES

from codepeft.execution import SandboxPool
from codepeft.tasks import extract_code, get_task, render_prompt
from codepeft.tasks.base import PYTHON_STOP, Prompt
from codepeft.tasks.scoring import score_execution


@pytest.fixture(scope="module")
def pool():
    return SandboxPool(workers=2)


def test_canonical_solutions_pass_all_164_and_empty_ones_none(pool):
    task = get_task("humaneval")
    problems = task.problems()
    assert len(problems) == 164
    good = score_execution(task, problems, [[p["canonical_solution"]] for p in problems], [1], pool)
    assert good["scores"]["pass@1"]["value"] == 1.0, [r["task_id"] for r in good["problems"] if not r["passed"]]
    empty = score_execution(task, problems, [[""] for _ in problems], [1], pool)
    assert empty["scores"]["pass@1"]["value"] == 0.0
    assert empty["isolation"] == pool.isolation


def test_every_shipped_bug_fails_its_tests_and_is_reproducible(pool):
    from codepeft.tasks.humaneval import humaneval_problems, test_program
    from codepeft.tasks.humanevalfix import build_bugs, shipped_bugs

    bugs = shipped_bugs()
    assert len(bugs) >= 150
    by_id = {p["task_id"]: p for p in humaneval_problems()}
    jobs = [(test_program(by_id[t], b["buggy_solution"]), "python", None) for t, b in bugs.items()]
    outcomes = [r.outcome.value for r in pool.map(jobs)]
    assert all(o in ("failed", "error") for o in outcomes), outcomes
    rebuilt = build_bugs(0, humaneval_problems()[:6], pool)
    assert rebuilt == [bugs[b["task_id"]] for b in rebuilt]


def test_fix_prompt_shows_bug_tests_and_instruction():
    task = get_task("humanevalfix-python-mutants")
    problem = task.problems()[0]
    prompt = task.prompt(problem)
    text = render_prompt(prompt, "octocoder")
    assert text.startswith("Question: ") and f"Fix bugs in {problem['entry_point']}." in text
    assert problem["buggy_solution"] in text and "def check(candidate)" in text
    assert text.endswith(prompt.answer_prefix) and '"""' not in prompt.answer_prefix.split("def ")[-1]


def test_explain_strips_code_and_caps_length():
    from codepeft.tasks.humanevalexplain import strip_code

    text = "Returns the sum.\n```python\ndef f(x):\n    return x\n```\nreturn x + 1\nIt uses `sum` on a list."
    out = strip_code(text, 40)
    assert "def" not in out and "return x" not in out and len(out) <= 40
    assert out.startswith("Returns the sum.")


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("    return 1\n", "PREFIX    return 1\n"),
        ("Here you go:\n```python\n    return 2\n```\nThanks", "PREFIX    return 2\n"),
        ("```python\ndef solve(x):\n    return 3\n```", "def solve(x):\n    return 3\n"),
        ("```\nreturn 4", "PREFIXreturn 4"),  # an unclosed fence still yields its code
    ],
)
def test_fence_extraction(completion, expected):
    assert extract_code(completion, "PREFIX", "solve") == expected


def test_stop_sequences_cut_at_the_first_one():
    from codepeft.generation import truncate_at_stop

    text = "    return x\n\ndef other():\n    pass\nprint(1)"
    assert truncate_at_stop(text, PYTHON_STOP) == "    return x\n"
    assert truncate_at_stop("    if x:\n        return 1", PYTHON_STOP) == "    if x:\n        return 1"  # indented
    assert truncate_at_stop("abc", []) == "abc"


def test_prompt_formats():
    p = Prompt(instruction="Do it.", answer_prefix="def f():\n")
    assert render_prompt(p, "plain") == "def f():\n"
    assert render_prompt(p, "octocoder") == "Question: Do it.\n\nAnswer:\ndef f():\n"
    assert render_prompt(p, "alpaca") == "### Instruction:\nDo it.\n### Response:\ndef f():\n"


def test_match_metrics_by_hand():
    from codepeft.tasks.match import score_match

    problems = [{"task_id": "a", "output": "x = 1"}, {"task_id": "b", "output": "y = [1, 2]"}]
    result = score_match(problems, [["x  =  1", "z"], ["nope", "y = [1, 2]"]], [1, 2])
    assert result["scores"]["em@1"]["value"] == 0.5  # whitespace-normalised exact match
    assert result["scores"]["em@2"]["value"] == 1.0
    perfect = score_match(problems, [["x = 1"], ["y = [1, 2]"]], [1])
    assert perfect["scores"]["bleu"]["value"] == pytest.approx(100.0)
    assert perfect["scores"]["chrf"]["value"] == pytest.approx(100.0)
    parts = perfect["scores"]["codebleu"]["components"]
    assert parts["syntax_match_score"] == 1.0 and parts["dataflow_match_score"] == 1.0


def test_codebleu_rewards_structure_over_tokens():
    from codepeft.tasks.match import codebleu

    ref = ["def f(a):\n    total = 0\n    for x in a:\n        total += x\n    return total\n"]
    renamed = ["def f(b):\n    acc = 0\n    for y in b:\n        acc += y\n    return acc\n"]
    unrelated = ["print('hello world')\n"]
    same = codebleu(ref, ref)["codebleu"]
    assert same == pytest.approx(1.0)
    assert same > codebleu(renamed, ref)["codebleu"] > codebleu(unrelated, ref)["codebleu"]
    assert codebleu(renamed, ref)["dataflow_match_score"] == pytest.approx(1.0)  # same data flow, new names


def test_conala_match_task_on_a_real_schema_fixture(tmp_path):
    from helpers import FIXTURES

    from codepeft.evaluation import score_file

    samples = tmp_path / "s.jsonl"
    samples.write_text(
        json.dumps({"task_id": "conala/0", "completion": "int(''.join(map(str, x)))"})
        + "\n"
        + json.dumps({"task_id": "conala/1", "completion": "s.upper()"})
        + "\n"
    )
    result = score_file("conala", samples, [1], data_files=str(FIXTURES / "conala.jsonl"))
    assert result["scores"]["em@1"]["value"] == 0.5


def test_score_file_uses_the_human_eval_sample_format(tmp_path):
    from codepeft.evaluation import score_file

    task = get_task("humaneval")
    problems = task.problems()[:3]
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    rows.append({"task_id": problems[0]["task_id"], "completion": "    return None\n"})
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score_file("humaneval", samples, [1])
    # problem 0: 1 of 2 pass; problems 1, 2: 1 of 1
    assert result["scores"]["pass@1"]["value"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert (tmp_path / "eval" / "humaneval.json").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    from codepeft.errors import CodepeftError

    with pytest.raises(CodepeftError, match="bad.jsonl line 1"):
        score_file("humaneval", bad, [1])


def test_unknown_task_lists_known_ones():
    from codepeft.errors import CodepeftError

    with pytest.raises(CodepeftError, match="unknown task 'humanevl'.*humaneval"):
        get_task("humanevl")
    assert get_task("mbpp-loss").kind == "loss"


JAVA_FIXTURE = str(FIXTURES / "humanevalpack_java.jsonl")


@pytest.mark.skipif(not __import__("shutil").which("javac"), reason="no javac on this machine")
def test_java_synthesize_and_fix_on_humanevalpack_schema(pool):
    synth = get_task("humanevalsynthesize-java", JAVA_FIXTURE)
    problems = synth.problems()
    assert [p["task_id"] for p in problems] == ["Java/0", "Java/1"]
    good = score_execution(synth, problems, [[p["canonical_solution"]] for p in problems], [1], pool)
    assert good["scores"]["pass@1"]["value"] == 1.0, good["outcomes"]
    # a completion that stops before closing the method and class is closed for it
    open_ended = [[p["canonical_solution"].rsplit("    }", 1)[0]] for p in problems]
    assert score_execution(synth, problems, open_ended, [1], pool)["scores"]["pass@1"]["value"] == 1.0
    fix = get_task("humanevalfix-java", JAVA_FIXTURE)
    bugs = score_execution(fix, problems, [[p["buggy_solution"]] for p in problems], [1], pool)
    assert bugs["scores"]["pass@1"]["value"] == 0.0 and bugs["outcomes"] == {"failed": 2}
    broken = score_execution(fix, problems, [["        return a +;\n"], [""]], [1], pool)
    assert broken["outcomes"] == {"compile_error": 2}
    assert "Fix bugs in addTwo." in fix.prompt(problems[0]).instruction


def test_java_task_without_data_names_the_missing_field(tmp_path):
    from codepeft.errors import CodepeftError

    bad = tmp_path / "j.jsonl"
    bad.write_text('{"task_id": "Java/0", "prompt": "x"}\n')
    with pytest.raises(CodepeftError, match=r"j.jsonl line 1: missing HumanEvalPack field"):
        get_task("humanevalsynthesize-java", str(bad)).problems()


def test_every_benchmark_of_the_shipped_data_is_a_registered_task():
    from codepeft.tasks import TASKS

    languages = ("python", "java", "js", "cpp", "go", "rust")
    expected = {f"humaneval{mode}-{lang}" for mode in ("synthesize", "fix", "fixdocs", "explain") for lang in languages}
    expected |= {"humaneval-plus", "mbpp-plus", "mbpp", "conala", "humanevalfix-python-mutants", "security-python"}
    expected |= {
        f"recode-{kind}{c}"
        for kind in ("", "generated-", "mbpp-")
        for c in ("docstring", "function", "syntax", "format")
    }
    expected |= {
        f"cyberseceval-{v}-{lang}"
        for v in ("instruct", "autocomplete")
        for lang in ("c", "cpp", "csharp", "java", "javascript", "php", "python", "rust")
    }
    assert expected <= set(TASKS), sorted(expected - set(TASKS))
