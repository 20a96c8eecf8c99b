"""Findings from a synthetic study with planted differences: a real gap is reported as
significant, a null one is not, the ranking ties what the tests cannot order, per-problem scores
reach the store (and old stores are migrated), and the claims say what the data supports."""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest

from codepeft.metrics.per_problem import corpus_chrf, problem_scores
from codepeft.report import analysis as A
from codepeft.report import claims as C
from codepeft.report import findings as S
from codepeft.report import write_report
from codepeft.study.store import Store, flatten_scores, store_path

PROBLEMS = 150


def _execution_result(solved: np.ndarray) -> dict:
    records = [{"task_id": f"HumanEval/{i}", "n": 1, "passed": int(s), "samples": [{}]} for i, s in enumerate(solved)]
    return {"scores": {"pass@1": {"value": float(solved.mean())}}, "problems": records}


def _match_result(answers: list[str], refs: list[str]) -> dict:
    from codepeft.tasks.match import score_match

    problems = [{"task_id": f"conala/{i}", "output": r} for i, r in enumerate(refs)]
    return score_match(problems, [[a] for a in answers], [1])


def _plant() -> dict[str, dict[str, dict]]:
    """zero-shot solves 20% of the problems; `good` solves 30 more (a real gap); `same` trades
    two problems with zero-shot (a null gap); on the match task `good` answers 80% exactly."""
    rng = np.random.default_rng(0)
    zero = rng.uniform(size=PROBLEMS) < 0.2
    good = zero.copy()
    good[np.flatnonzero(~zero)[:30]] = True
    same = zero.copy()
    same[np.flatnonzero(zero)[:2]] = False
    same[np.flatnonzero(~zero)[:2]] = True
    refs = [f"x{i} = sorted(items[{i}])" for i in range(60)]
    wrong = [f"y = list({i})" for i in range(60)]
    return {
        "zero-shot": {"humaneval": _execution_result(zero), "conala": _match_result(wrong, refs)},
        "good": {
            "humaneval": _execution_result(good),
            "conala": _match_result(
                [r if i % 5 else w for i, (r, w) in enumerate(zip(refs, wrong, strict=True))], refs
            ),
        },
        "same": {"humaneval": _execution_result(same), "conala": _match_result(list(wrong), refs)},
    }


@pytest.fixture
def study(tmp_path):
    store = Store(store_path(tmp_path))
    planted = _plant()
    families = {"zero-shot": "zero-shot", "good": "lora", "same": "ia3"}
    store.add_cells(
        [
            {"cell_id": f"m/{name}/d/seed0", "model": "m", "model_path": "m", "model_size": 1e6, "method": name,
             "method_label": name, "family": families[name], "dataset": "d", "seed": 0, "spec": {}}
            for name in planted
        ]
    )  # fmt: skip
    for name, results in planted.items():
        store.record(
            f"m/{name}/d/seed0",
            {
                "metrics": [row for task, r in results.items() for row in flatten_scores(task, r["scores"])],
                "problem_scores": {task: problem_scores(r) for task, r in results.items()},
            },
        )
    store.close()
    return tmp_path


def _data(directory):
    store = Store(store_path(directory))
    try:
        return A.load(store)
    finally:
        store.close()


def _pair(comps, task, a, b):
    rows = comps[(comps["task"] == task) & (comps["a"] == min(a, b)) & (comps["b"] == max(a, b))]
    assert len(rows) == 1
    return rows.iloc[0]


def test_a_planted_gap_is_significant_and_a_null_one_is_not(study):
    comps = S.comparisons(_data(study))
    real = _pair(comps, "humaneval", "good", "zero-shot")
    assert real["test"] == "mcnemar-exact" and real["significant"] and real["better"] == "good"
    assert real["problems"] == PROBLEMS and real["p_holm"] < 1e-6
    assert real["ci_low"] <= 30 / PROBLEMS <= real["ci_high"]
    null = _pair(comps, "humaneval", "same", "zero-shot")
    assert not null["significant"] and null["p_holm"] == 1.0 and null["difference"] == 0
    # Holm: the adjusted p-value is at least the raw one, and at most 1
    assert (comps["p_holm"] >= comps["p"] - 1e-12).all() and (comps["p_holm"] <= 1).all()


def test_match_tasks_use_mcnemar_for_exact_match_and_randomization_for_the_corpus_metric(study):
    data = _data(study)
    comps = S.comparisons(data)
    task_metric = A.primary_metric(data.metrics, "conala")
    row = _pair(comps, "conala", "good", "zero-shot")
    expected = "mcnemar-exact" if task_metric == "em@1" else "randomization"  # greedy em@1 is pass/fail per problem
    assert row["test"] == expected and row["significant"] and row["better"] == "good"
    if task_metric == "chrf":  # the difference is the corpus chrF difference, as the scores table has it
        recorded = data.metrics[(data.metrics["task"] == "conala") & (data.metrics["metric"] == "chrf")]
        by_cell = recorded.set_index("cell_id")["value"]
        assert row["difference"] == pytest.approx(by_cell["m/good/d/seed0"] - by_cell["m/zero-shot/d/seed0"])


def test_the_ranking_ties_what_the_tests_cannot_order(study):
    ranking = S.significance_ranking(S.comparisons(_data(study))).set_index("method")
    assert ranking.loc["good", "rank"] == 1
    assert ranking.loc["same", "rank"] == ranking.loc["zero-shot", "rank"] == 2  # a tie, shown as one


def test_findings_name_the_gap_and_the_problems_a_null_gap_would_need(study):
    found = {f["task"]: f["lines"] for f in S.task_findings(S.comparisons(_data(study)))}
    assert any(line.startswith("good beats zero-shot (pass@1 +0.2") for line in found["humaneval"])
    null = [line for line in found["humaneval"] if "not distinguishable" in line]
    assert len(null) == 1 and "same vs zero-shot" in null[0] and "has no gap to detect" in null[0]


def test_claims_are_judged_from_the_tests(study):
    verdicts = {c["claim"]: c for c in C.claims(_data(study), S.comparisons(_data(study)), set())}
    lora = verdicts["LoRA is the best PEFT trade-off"]
    assert lora["verdict"] == "undecided"  # no method named lora: the claim cannot be tested here
    assert verdicts["Full fine-tuning is best overall"]["evidence"] == ["no full fine-tuning cell"]
    assert verdicts["Larger models are less robust (ReCode) and less secure"]["verdict"] == "undecided"


def test_the_report_has_findings_claims_and_the_tied_ranking(study):
    page = write_report(study).read_text()
    for heading in ("Summary", "Findings", "The two studies&#x27; claims on this data", "Overall ranking"):
        assert f">{heading}</h2>" in page
    assert "good beats zero-shot" in page
    assert "humaneval (m, d): best pass@1 0.38 by good, significantly better than all 2 others." in page
    assert "<a href='#findings'>Findings</a>" in page and "<h2 id='findings'>" in page
    comparisons = pd.read_csv(study / "report" / "tables" / "comparisons.csv")
    assert len(comparisons) == 2 * 3  # two tasks, three pairs each


def test_seed_repeats_become_per_problem_seed_means():
    rows = problem_scores(
        {
            "problems": [
                {"task_id": "p0", "n": 1, "passed": 1, "seed": 0},
                {"task_id": "p0", "n": 1, "passed": 0, "seed": 1},
                {"task_id": "p1", "n": 1, "passed": 1, "seed": 0},
                {"task_id": "p1", "n": 1, "passed": 1, "seed": 1},
            ]
        }
    )
    by = {r["problem"]: r for r in rows}
    assert (by["p0"]["value"], by["p0"]["n"], by["p0"]["c"]) == (0.5, 2, 1)
    assert by["p1"]["value"] == 1.0


def test_per_problem_chrf_statistics_rebuild_the_corpus_score():
    result = _match_result(["a = b + 1", "print(x)", "foo(bar)"], ["a = b+1", "print(y)", "foo(baz)"])
    stats = [r["detail"] for r in problem_scores(result) if r["metric"] == "chrf"]
    assert corpus_chrf(stats) == pytest.approx(result["scores"]["chrf"]["value"])


def test_an_old_store_is_migrated_in_place_from_the_cells_eval_files(tmp_path):
    study = tmp_path / "s"
    cell_dir = study / "cells" / "m__lora__d__seed0"
    (cell_dir / "eval").mkdir(parents=True)
    result = {**_execution_result(np.array([1, 0, 1], bool)), "isolation": "rlimits"}
    (cell_dir / "eval" / "humaneval.json").write_text(json.dumps(result))
    db = sqlite3.connect(store_path(study))
    db.executescript(
        """CREATE TABLE cells (cell_id TEXT PRIMARY KEY, model TEXT NOT NULL, model_path TEXT, model_size REAL,
        method TEXT NOT NULL, method_label TEXT NOT NULL, family TEXT, dataset TEXT NOT NULL, seed INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', error TEXT, attempts INTEGER NOT NULL DEFAULT 0, run_dir TEXT,
        started_at TEXT, finished_at TEXT, spec TEXT);
        CREATE TABLE metrics (cell_id TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, value REAL, n INTEGER,
        k INTEGER, ci_low REAL, ci_high REAL, sd REAL, detail TEXT, PRIMARY KEY (cell_id, task, metric));"""
    )
    spec = json.dumps({"cell_dir": "elsewhere/cells/m__lora__d__seed0"})  # the study folder moved since
    db.execute("INSERT INTO cells (cell_id, model, method, method_label, dataset, seed, status, spec)"
               " VALUES ('m/lora/d/seed0', 'm', 'lora', 'lora', 'd', 0, 'done', ?)", (spec,))  # fmt: skip
    db.execute("INSERT INTO metrics VALUES ('m/lora/d/seed0', 'humaneval', 'pass@1', 0.667, 1, 1, 0, 1, NULL, NULL)")
    db.commit()
    db.close()
    store = Store(store_path(study))
    try:
        rows = store.rows("problems")
        assert sorted((r["problem"], r["c"]) for r in rows) == [
            ("HumanEval/0", 1),
            ("HumanEval/1", 0),
            ("HumanEval/2", 1),
        ]
        metric = store.rows("metrics")[0]
        assert metric["value"] == 0.667  # nothing lost
        assert json.loads(metric["detail"]) == {"isolation": "rlimits"}  # the level its programs ran at
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        store.close()


def test_compare_sets_reference_numbers_beside_measured_ones(study, tmp_path):
    from typer.testing import CliRunner

    from codepeft.cli import app

    ref = tmp_path / "reference.csv"
    ref.write_text(
        "model,method,task,metric,value,source\n"
        "m,good,humaneval,pass@1,0.40,paper table 1\n"  # inside the measured interval
        "m,zero-shot,humaneval,pass@1,0.90,paper table 1\n"  # far outside
        "m,absent,humaneval,pass@1,0.5,not run here\n"
    )
    result = CliRunner().invoke(app, ["report", str(study), "--compare", str(ref)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(study / "report" / "tables" / "compare.csv").set_index("method")
    good = table.loc["good"]
    assert good["ci_low"] <= good["measured"] <= good["ci_high"] and bool(good["within"])
    assert good["difference"] == pytest.approx(good["measured"] - 0.40)
    assert not bool(table.loc["zero-shot", "within"])
    assert pd.isna(table.loc["absent", "measured"])
    assert (study / "report" / "figures" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "Measured vs reference" in (study / "report" / "index.html").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model,method\nm,good\n", "missing column(s) task, metric, value, source"),
        (
            "model,method,task,metric,value,source\nm,good,humaneval,pass@1,high,x\n",
            "row 2: value 'high' is not a number",
        ),
    ],
)
def test_a_bad_reference_file_is_one_clear_error_before_anything_is_written(study, tmp_path, content, message):
    from codepeft.errors import CodepeftError

    ref = tmp_path / "reference.csv"
    ref.write_text(content)
    with pytest.raises(CodepeftError, match=re.escape(message)):
        write_report(study, ref)
    assert not (study / "report").exists()


def test_seed_cells_are_compared_on_per_problem_means_and_their_spread_is_shown(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.uniform(size=PROBLEMS) < 0.3
    seeds = {0: base.copy(), 1: base.copy()}
    seeds[1][np.flatnonzero(~base)[:10]] = True  # the second seed solves 10 more problems
    store = Store(store_path(tmp_path))
    cells = [("zero-shot", "zero-shot", 0, base)] + [("lora", "lora", s, v) for s, v in seeds.items()]
    store.add_cells(
        [
            {"cell_id": f"m/{name}/d/seed{seed}", "model": "m", "model_path": "m", "model_size": 1e6, "method": name,
             "method_label": name, "family": family, "dataset": "d", "seed": seed, "spec": {}}
            for name, family, seed, _ in cells
        ]
    )  # fmt: skip
    for name, _, seed, solved in cells:
        result = _execution_result(solved)
        store.record(
            f"m/{name}/d/seed{seed}",
            {
                "metrics": flatten_scores("humaneval", result["scores"]),
                "problem_scores": {"humaneval": problem_scores(result)},
            },
        )
    store.close()
    data = _data(tmp_path)
    row = _pair(S.comparisons(data), "humaneval", "lora", "zero-shot")
    assert (row["a_seeds"], row["b_seeds"]) == (2, 1)
    assert row["a_score"] == pytest.approx(base.mean() + 5 / PROBLEMS)  # the per-problem seed mean
    assert row["test"] == "permutation"  # seed means are not 0/1: not a McNemar case
    table = A.score_table(data).set_index("method")
    assert "over 2 seeds" in table.loc["lora", "humaneval pass@1"] and "±" in table.loc["lora", "humaneval pass@1"]


def test_loss_vs_score_says_why_when_no_score_varies(tmp_path):
    store = Store(store_path(tmp_path))
    names = ["full", "lora", "ia3", "prompt"]
    store.add_cells(
        [
            {"cell_id": f"m/{n}/d/seed0", "model": "m", "model_path": "m", "model_size": 1e6, "method": n,
             "method_label": n, "family": "lora", "dataset": "d", "seed": 0, "spec": {}}
            for n in names
        ]
    )  # fmt: skip
    for i, n in enumerate(names):
        store.record(
            f"m/{n}/d/seed0",
            {
                "metrics": flatten_scores("humaneval", {"pass@1": {"value": 0.0}}),  # 0 for every method
                "run": {"run_dir": "x", "final_train_loss": 2.0, "final_eval_loss": 2.0 + i / 10, "steps": 6},
                "cost": {"trainable_params": 10, "total_params": 100},
            },
        )
    store.close()
    claim = C.loss_predicts(_data(tmp_path))
    assert claim["verdict"] == "undecided"
    assert "4 trained cells have a validation loss, but no downstream score varies" in claim["evidence"][0]
