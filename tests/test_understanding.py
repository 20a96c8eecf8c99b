"""Clone and defect detection: answer parsing, metrics by hand, offline data, real-schema loaders."""

from __future__ import annotations

import pytest
from helpers import FIXTURES

from codepeft.execution import SandboxPool
from codepeft.tasks import get_task
from codepeft.tasks.understanding import (
    classification_scores,
    offline_clones,
    offline_defects,
    parse_yes_no,
    rewrite,
    score_classification,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("YES", "YES"),
        (" no.", "NO"),
        ("**Yes**, they are clones", "YES"),
        ("Answer: NO\n\nBecause yes...", "NO"),
        ("yes or no? I cannot tell", None),
        ("", None),
        ("Nope", None),
        ("The answer is: no", "NO"),
        ("yesterday it worked", None),
    ],
)
def test_answer_parsing_on_messy_outputs(text, expected):
    assert parse_yes_no(text) == expected


def test_metrics_by_hand():
    gold = ["YES", "YES", "NO", "NO"]
    pred = ["YES", None, "NO", "YES"]
    s = classification_scores(gold, pred)
    assert s["accuracy"]["value"] == pytest.approx(2 / 4)
    assert s["valid_rate"]["value"] == pytest.approx(3 / 4)
    assert s["accuracy_valid"]["value"] == pytest.approx(2 / 3)
    # YES: tp 1, fp 1, fn 1 -> 0.5; NO: tp 1, fp 0, fn 1 -> 2/3
    assert s["macro_f1"]["value"] == pytest.approx((0.5 + 2 / 3) / 2)
    # valid only: YES tp1 fp1 fn0 -> 2/3; NO tp1 fp0 fn1 -> 2/3
    assert s["macro_f1_valid"]["value"] == pytest.approx(2 / 3)


def test_offline_sets_are_balanced_and_seeded():
    clones, defects = offline_clones(), offline_defects()
    assert sum(r["label"] == "YES" for r in clones) * 2 == len(clones) == 2 * (164 + 150)
    assert sum(r["label"] == "YES" for r in defects) * 2 == len(defects) >= 300
    assert offline_clones(0) == clones and offline_clones(1) != clones
    assert not any('"""' in r["code"] for r in defects)  # both sides printed the same way


def test_clone_rewrites_keep_semantics():
    from codepeft.tasks.humaneval import humaneval_problems, test_program

    problems = humaneval_problems()
    rewrites = [rewrite(p["prompt"] + p["canonical_solution"], i) for i, p in enumerate(problems)]
    assert sum("while True" in r for r in rewrites) > 30  # loop forms really change
    jobs = [(test_program(p, r), "python", None) for p, r in zip(problems, rewrites, strict=True)]
    results = SandboxPool(workers=2).map(jobs)
    assert [p["task_id"] for p, r in zip(problems, results, strict=True) if not r.passed] == []


def test_real_schema_loaders():
    clone = get_task("clone-detection-bigclonebench", str(FIXTURES / "bigclonebench.jsonl"))
    rows = clone.problems()
    assert [r["label"] for r in rows] == ["YES", "NO"] and "Code 2:\npublic int sum" in clone.prompt(
        rows[0]
    ).instruction
    defect = get_task("defect-detection-devign", str(FIXTURES / "devign.jsonl"))
    assert [r["label"] for r in defect.problems()] == ["YES", "NO"]
    perfect = score_classification(rows, [["YES"], ["NO"]])
    assert perfect["scores"]["accuracy"]["value"] == 1.0


def test_one_shot_prompt_carries_an_example_not_in_the_set():
    task = get_task("defect-detection-1shot")
    problems = task.problems()
    assert len(task.examples) == 1 and task.examples[0]["id"] not in {p["task_id"] for p in problems}
    assert task.prompt(problems[0]).plain.count("Respond YES or NO.") == 2


def test_classification_through_eval(tmp_path, tiny_model):

    out = tmp_path / "ev"
    from helpers import run_eval

    output, results = run_eval(
        str(tiny_model("llama")), "clone-detection,defect-detection", out, "--limit", "4", "--max-new-tokens", "4"
    )
    data = results["defect-detection"]
    assert set(data["scores"]) >= {"accuracy", "macro_f1", "valid_rate", "accuracy_valid"}
    assert len(data["problems"]) == 4
