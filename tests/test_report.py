"""The report from a store with known numbers: ranking, correlations, Pareto frontier, joint vs
separate, and figures drawn only when the data supports them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from codepeft.report import analysis as A
from codepeft.report import write_report
from codepeft.study.store import Store, flatten_scores, store_path

# (model, size, method, family, dataset, pass@1, em@1, test loss, trainable, peak GB)
ROWS = [
    ("small", 1e6, "full", "full", "a", 0.30, 0.20, 2.0, 1_000_000, 4.0),
    ("small", 1e6, "lora", "lora", "a", 0.25, 0.10, 2.2, 10_000, 2.0),
    ("small", 1e6, "ia3", "ia3", "a", 0.10, 0.05, 2.6, 1_000, 1.9),
    ("small", 1e6, "icl", "baseline", "a", 0.05, 0.00, None, None, None),
    ("large", 4e6, "full", "full", "a", 0.50, 0.40, 1.6, 4_000_000, 9.0),
    ("large", 4e6, "lora", "lora", "a", 0.48, 0.30, 1.7, 40_000, 5.0),
    ("large", 4e6, "ia3", "ia3", "a", 0.30, 0.35, 1.9, 4_000, 5.5),
    ("large", 4e6, "lora", "lora", "a+b", 0.47, 0.33, 1.75, 40_000, 5.0),
]


def _cell_id(r):
    return f"{r[0]}/{r[2]}/{r[4]}/seed0"


@pytest.fixture
def study_dir(tmp_path):
    store = Store(store_path(tmp_path))
    store.add_cells(
        [
            {"cell_id": _cell_id(r), "model": r[0], "model_path": r[0], "model_size": r[1], "method": r[2],
             "method_label": r[2], "family": r[3], "dataset": r[4], "seed": 0, "spec": {}}
            for r in ROWS
        ]
    )  # fmt: skip
    for r in ROWS:
        result = {
            "metrics": flatten_scores("humaneval", {"pass@1": {"value": r[5], "ci95": [r[5] - 0.05, r[5] + 0.05]}})
            + flatten_scores("conala", {"em@1": {"value": r[6]}})
            + flatten_scores(
                "recode-syntax",
                {"robust_pass@1": {"value": r[5] / 2}, "robust_drop@1": {"value": 0.5}, "nominal@1": {"value": r[5]}},
            )
            + flatten_scores("security-python", {"valid_rate": {"value": 0.9}, "insecure_rate": {"value": r[6]}}),
        }
        if r[7] is not None:
            result["run"] = {"run_dir": "x", "final_train_loss": r[7] - 0.1, "final_eval_loss": r[7], "steps": 10}
            result["cost"] = {"trainable_params": r[8], "total_params": r[1] + r[8], "trainable_ratio": r[8] / r[1],
                              "peak_memory_bytes": int(r[9] * 2**30), "peak_memory_kind": "cuda_max_allocated",
                              "wall_time_s": 10.0, "tokens_per_s": 100.0}  # fmt: skip
            result["curves"] = [{"split": "eval", "step": s, "loss": r[7] + 1 / s} for s in (5, 10)]
        store.record(_cell_id(r), result)
    store.close()
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({"datasets": [{"name": "a", "train": [{}]}, {"name": "a+b", "train": [{}, {}]}]})
    )
    return tmp_path


def _data(study_dir):
    store = Store(store_path(study_dir))
    try:
        return A.load(store)
    finally:
        store.close()


def test_ranking_normalises_within_each_model(study_dir):
    rank = A.ranking(_data(study_dir))
    small = rank[rank["model"] == "small"].set_index("method_label")
    # pass@1 0.30/0.25/0.10/0.05 -> 1, .8, .2, 0; em@1 .2/.1/.05/0 -> 1, .5, .25, 0; ReCode as pass@1;
    # insecure rate (= em@1 here) is lower-better: 0, .5, .75, 1
    assert small.loc["full", "mean_normalised_score"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert small.loc["lora", "mean_normalised_score"] == pytest.approx((0.8 + 0.5 + 0.8 + 0.5) / 4)
    assert small.loc["ia3", "mean_normalised_score"] == pytest.approx((0.2 + 0.25 + 0.2 + 0.75) / 4)
    assert small.loc["icl", "mean_normalised_score"] == pytest.approx((0 + 0 + 0 + 1) / 4)
    assert list(small.sort_values("rank").index) == ["full", "lora", "ia3", "icl"]


def test_correlations_match_numpy(study_dir):
    data = _data(study_dir)
    corr = A.correlations(data).set_index("loss")
    joined = data.runs.merge(A.mean_downstream(data), on="cell_id")
    expected = np.corrcoef(joined["final_eval_loss"], joined["downstream"])[0, 1]
    assert corr.loc["validation loss", "pearson"] == pytest.approx(expected)
    assert corr.loc["validation loss", "cells"] == 7
    ranks = joined[["final_eval_loss", "downstream"]].rank()
    assert corr.loc["validation loss", "spearman"] == pytest.approx(np.corrcoef(ranks.T)[0, 1])
    assert corr.loc["validation loss", "pearson"] < 0  # lower loss, better scores


def test_pareto_frontier(study_dir):
    front = A.pareto(_data(study_dir))
    small = front[front["model"] == "small"].set_index("method")
    assert (
        bool(small.loc["full", "frontier"])
        and bool(small.loc["lora", "frontier"])
        and bool(small.loc["ia3", "frontier"])
    )
    large = front[front["model"] == "large"].set_index("method")
    # ia3 costs more memory than lora (5.5 vs 5.0 GB) and scores lower: dominated
    assert not bool(large.loc["ia3", "frontier"])
    assert "icl" not in set(front["method"])  # prompting has no training cost


def test_joint_vs_separate_table(study_dir):
    table = A.joint_vs_separate(_data(study_dir), {"a+b"})
    lora = table[(table["model"] == "large") & (table["method_label"] == "lora")].set_index("column")
    assert lora.loc["humaneval pass@1", "a"] == pytest.approx(0.48)
    assert lora.loc["humaneval pass@1", "a+b (joint)"] == pytest.approx(0.47)
    assert "no joint" in A.joint_vs_separate(_data(study_dir), set())


def test_report_writes_tables_figures_and_one_page(study_dir):
    page = write_report(study_dir)
    figures = study_dir / "report" / "figures"
    for name in (
        "ranking", "loss_vs_size", "loss_curves", "params_vs_loss", "loss_vs_score", "memory", "pareto", "robustness",
        "security",
    ):  # fmt: skip
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    tables = study_dir / "report" / "tables"
    for name in ("scores", "ranking", "loss", "correlations", "costs", "pareto", "joint_vs_separate", "robustness"):
        for suffix in ("md", "csv", "tex"):
            assert (tables / f"{name}.{suffix}").is_file(), f"{name}.{suffix}"
    scores = pd.read_csv(tables / "scores.csv")
    assert len(scores) == len(ROWS)  # one row per cell that exists, not every model x size x method
    loss = pd.read_csv(tables / "loss.csv")
    assert sorted(loss["final_valid_loss"]) == sorted(r[7] for r in ROWS if r[7] is not None)
    html = page.read_text()
    assert html.count("<img") == 9 and "data:image/png;base64," in html
    robust = pd.read_csv(tables / "robustness.csv").set_index(["dataset", "model", "method_label"])
    assert robust.loc[("a", "small", "lora"), "syntax robust_pass@1"] == pytest.approx(0.125)
    assert robust.loc[("a+b", "large", "lora"), "syntax robust_pass@1"] == pytest.approx(0.235)  # not averaged
    security = pd.read_csv(tables / "security.csv").set_index(["dataset", "model", "method_label"])
    assert security.loc[("a", "large", "ia3"), "python insecure_rate"] == pytest.approx(0.35)
    assert "\\begin{tabular}" in (tables / "scores.tex").read_text()


def test_report_says_when_data_is_too_thin(study_dir):
    write_report(study_dir)
    store = Store(store_path(study_dir))
    with store.transaction() as db:
        db.execute("UPDATE cells SET status='failed' WHERE model='large' OR method='ia3'")
    store.close()
    html = write_report(study_dir).read_text()
    assert "one model size only" in html
    assert not (study_dir / "report" / "figures" / "loss_vs_size.png").exists()  # no stale figure stays
    assert "fewer than three trained cells" in html


def test_counts_read_as_people_write_them_and_csv_keeps_the_exact_number(study_dir):
    page = write_report(study_dir).read_text()
    assert ">4M<" in page and ">10k<" in page  # a model size and a trainable-parameter count
    assert "e+06" not in page and "e+04" not in page
    costs = pd.read_csv(study_dir / "report" / "tables" / "costs.csv")
    assert 10_000 in set(costs["trainable_params"])
    assert A.human_count(134_515_008) == "134.5M" and A.human_count(9216) == "9.216k" and A.human_count(12) == "12"
