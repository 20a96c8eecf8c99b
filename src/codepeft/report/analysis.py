"""Frames and analyses built from the results store (and nothing else).

Every analysis returns a DataFrame, or a short note when the store holds too little data for it:
a report that says "one model size: no scale trend to show" is better than a misleading line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from codepeft.families import MethodFamily
from codepeft.study.store import Store

# The score a task is ranked by, in order of preference, and metrics where lower is better.
# chrF before CodeBLEU: CodeBLEU gives an empty answer 0.25 (its syntax and data-flow parts
# have nothing to compare), which ranks a model that says nothing above one that tries.
PRIMARY = ("pass@1", "robust_pass@1", "em@1", "chrf", "codebleu", "macro_f1", "accuracy", "insecure_rate", "loss")
LOWER_IS_BETTER = {"loss", "perplexity", "insecure_rate", "robust_drop@1", "robust_relative@1"}
PROMPTING = {MethodFamily.ZERO_SHOT: "zero-shot", MethodFamily.BASELINE: "prompting"}
LEGACY_FAMILIES = {"none": MethodFamily.ZERO_SHOT.value}  # stores written before zero-shot had one spelling


@dataclass
class StudyData:
    cells: pd.DataFrame  # done cells with their coordinates and the model's size
    metrics: pd.DataFrame  # long: one row per cell x task x metric
    costs: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame
    problems: pd.DataFrame  # long: one row per cell x task x problem x per-problem metric


def load(store: Store) -> StudyData:
    def frame(table: str) -> pd.DataFrame:
        return pd.DataFrame(store.rows(table))

    cells = frame("cells")
    cells = cells[cells["status"] == "done"].copy() if len(cells) else cells
    metrics, costs, runs, curves = frame("metrics"), frame("costs"), frame("runs"), frame("curves")
    problems = frame("problems")
    if len(problems):
        problems["detail"] = problems["detail"].map(lambda d: json.loads(d) if isinstance(d, str) else None)
    if len(cells):
        cells["family"] = cells["family"].replace(LEGACY_FAMILIES)
        cells["kind"] = cells["family"].map(lambda f: PROMPTING.get(f, "tuning"))
        cells["model_size"] = _sizes(cells, costs)
        keep = set(cells["cell_id"])
        metrics, costs, runs, curves, problems = (
            f[f["cell_id"].isin(keep)] if len(f) else f for f in (metrics, costs, runs, curves, problems)
        )
    return StudyData(cells, metrics, costs, runs, curves, problems)


def _sizes(cells: pd.DataFrame, costs: pd.DataFrame) -> pd.Series:
    """Parameters of each cell's base model: as recorded, else from any trained cell of that model
    (total minus trainable parameters; total for full fine-tuning)."""
    by_model: dict[str, float] = {}
    if len(costs):
        joined = cells.merge(costs, on="cell_id")
        for _, r in joined.iterrows():
            if pd.notna(r.get("total_params")):
                base = (
                    r["total_params"] if r["family"] == MethodFamily.FULL else r["total_params"] - r["trainable_params"]
                )
                by_model.setdefault(r["model"], float(base))
    return cells.apply(
        lambda r: r["model_size"] if pd.notna(r["model_size"]) else by_model.get(r["model"], np.nan), axis=1
    )


COUNT_COLUMNS = ("size", "model_size", "trainable_params", "total_params", "train_tokens")


def human_count(n) -> str:
    """A count for people: 134.5M, 2.4M, 9.2k (tables in CSV keep the exact number)."""
    if n is None or pd.isna(n):
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.4g}{unit}"
    return f"{n:.0f}"


def for_reading(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its parameter, size and token counts written for reading (HTML, Markdown)."""
    out = frame.copy()
    out.columns.name = None  # a pivot's column-axis name would print as an empty header
    for column in COUNT_COLUMNS:
        if column in out.columns:
            out[column] = out[column].map(human_count)
    return out


def primary_metric(metrics: pd.DataFrame, task: str) -> str | None:
    """The task's first metric in PRIMARY order that differs between cells; a metric equal for
    every method (pass@1 = 0 for all, say) cannot rank them, so the next one is used."""
    rows = metrics[metrics["task"] == task]
    present = [m for m in PRIMARY if m in set(rows["metric"])]
    varying = [m for m in present if rows.loc[rows["metric"] == m, "value"].round(12).nunique() > 1]
    return (varying or present or [None])[0]


def primary_scores(data: StudyData) -> pd.DataFrame:
    """One row per cell x task: the task's primary metric, its value and CI, with the cell's coordinates."""
    rows = []
    for task in sorted(set(data.metrics["task"])) if len(data.metrics) else []:
        metric = primary_metric(data.metrics, task)
        rows.append(data.metrics[(data.metrics["task"] == task) & (data.metrics["metric"] == metric)])
    if not rows:
        return pd.DataFrame(columns=["cell_id", "task", "metric", "value"])
    frame = pd.concat(rows)
    return frame.merge(data.cells, on="cell_id")


def score_table(data: StudyData) -> pd.DataFrame:
    """Every metric with a value: rows (dataset, model, size, method), columns task / metric."""
    if not len(data.metrics):
        return pd.DataFrame()
    m = data.metrics.merge(data.cells, on="cell_id")
    m = m[m["metric"].str.count("/") == 0]
    m["column"] = m["task"] + " " + m["metric"]
    index = ["dataset", "model", "model_size", "method_label"]
    cells = []
    for key, group in m.groupby([*index, "column"], dropna=False):
        # one cell: its value and interval; several seed cells: their mean, spread and count
        cells.append((*key, _with_ci(group.iloc[0]) if len(group) == 1 else _over_seed_cells(group)))
    frame = pd.DataFrame(cells, columns=[*index, "column", "cell"])
    table = frame.pivot_table(index=index, columns="column", values="cell", aggfunc="first", dropna=False)
    # dropna=False keeps a method's row when a size is unknown, but also makes every combination of
    # the index; only the rows of cells that exist stay
    table = table.dropna(how="all")
    table.columns.name = None  # else an empty "column" header in front of the table
    return table.reset_index().rename(columns={"method_label": "method", "model_size": "size"})


def _over_seed_cells(group: pd.DataFrame) -> str:
    values = group["value"].dropna().astype(float)
    if not len(values):
        return "n/a"
    text = f"{values.mean():.4g}"
    if len(values) > 1:
        text += f" ±{values.std(ddof=1):.2g}sd over {len(values)} seeds"
    levels = sorted({lv for _, r in group.iterrows() if (lv := _detail(r).get("isolation"))})
    return text + (f" (sandbox {', '.join(levels)})" if levels else "")


def _with_ci(r) -> str:
    if r["value"] is None or (isinstance(r["value"], float) and math.isnan(r["value"])):
        return "n/a"
    text = f"{r['value']:.4g}"
    if pd.notna(r.get("ci_low")) and pd.notna(r.get("ci_high")) and r["ci_low"] != r["ci_high"]:
        text += f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
    if pd.notna(r.get("sd")):
        text += f" ±{r['sd']:.2g}sd"
    size = _sample_size(r)
    isolation = _detail(r).get("isolation")
    notes = [*([size] if size and "[" in text else []), *([f"sandbox {isolation}"] if isolation else [])]
    return f"{text} ({', '.join(notes)})" if notes else text


def isolation_levels(data: StudyData) -> dict[str, int]:
    """How many (cell, task) execution results ran at each isolation level."""
    counts: dict[str, int] = {}
    if not len(data.metrics):
        return counts
    for (_, _), group in data.metrics.groupby(["cell_id", "task"]):
        level = _detail(group.iloc[0]).get("isolation")
        if level:
            counts[level] = counts.get(level, 0) + 1
    return counts


def _detail(r) -> dict:
    detail = r.get("detail")
    return json.loads(detail) if isinstance(detail, str) else detail if isinstance(detail, dict) else {}


def _sample_size(r) -> str:
    """What an interval rests on: problems (or examples), samples per problem, seeds."""
    detail = _detail(r)
    parts = []
    for key, word in (("problems", "problems"), ("examples", "examples"), ("samples", "samples")):
        if detail.get(key):
            parts.append(f"{detail[key]} {word}")
    if pd.notna(r.get("n")) and r.get("n") and r["n"] > 1:
        parts.append(f"n={int(r['n'])}")
    seeds = detail.get("seeds") or (len(detail["per_seed"]) if detail.get("per_seed") else None)
    if seeds and seeds > 1:
        parts.append(f"{seeds} seeds")
    return ", ".join(parts)


def _normalised_scores(data: StudyData) -> pd.DataFrame:
    """Primary downstream scores min-max normalised per task within each model, higher better."""
    scores = primary_scores(data)
    scores = scores[~scores["task"].str.endswith("-loss")]
    parts = []
    for _, group in scores.groupby(["model", "dataset", "task"]):  # methods compete on one model and training set
        values = group["value"].astype(float) * (-1 if group["metric"].iloc[0] in LOWER_IS_BETTER else 1)
        span = values.max() - values.min()
        if span == 0 and len(group) > 1:
            continue  # every method scores the same: no ranking information
        norm = (values - values.min()) / span if span > 0 else values * 0 + 0.5  # all tied: the middle
        parts.append(group.assign(norm=norm.values))
    return pd.concat(parts) if parts else pd.DataFrame(columns=[*scores.columns, "norm"])


def ranking_basis(data: StudyData) -> str:
    """Which metric ranks each task, and which tasks cannot rank (equal for every method)."""
    scores = primary_scores(data)
    scores = scores[~scores["task"].str.endswith("-loss")]
    used, flat = [], []
    for task, group in scores.groupby("task"):
        metric = group["metric"].iloc[0]
        (used if group["value"].round(12).nunique() > 1 else flat).append(f"{task} {metric}")
    text = "ranked by " + (", ".join(used) or "nothing")
    return text + (f"; left out (equal for every method): {', '.join(flat)}" if flat else "")


def normalised(data: StudyData) -> pd.DataFrame:
    """Mean normalised score per model and method: the Astraios overall ranking."""
    frame = _normalised_scores(data)
    if not len(frame):
        return pd.DataFrame()
    return (
        frame.groupby(["model", "model_size", "dataset", "method_label", "kind"], dropna=False)["norm"]
        .mean()
        .reset_index()
        .rename(columns={"norm": "mean_normalised_score"})
        .sort_values(["model_size", "mean_normalised_score"], ascending=[True, False])
    )


def ranking(data: StudyData) -> pd.DataFrame:
    frame = normalised(data)
    if not len(frame):
        return frame
    frame["rank"] = (
        frame.groupby(["model", "dataset"])["mean_normalised_score"].rank(ascending=False, method="min").astype(int)
    )
    return frame


def losses(data: StudyData) -> pd.DataFrame:
    """Final train and validation loss (the training set's validation split, not a loss task) of each
    trained cell, with its trainable parameters."""
    if not len(data.runs):
        return pd.DataFrame()
    frame = data.runs.merge(data.cells, on="cell_id").merge(data.costs, on="cell_id", how="left")
    return frame[
        ["dataset", "model", "model_size", "method_label", "seed", "final_train_loss", "final_eval_loss",
         "trainable_params", "steps"]
    ].rename(columns={"method_label": "method", "final_eval_loss": "final_valid_loss"})  # fmt: skip


def mean_downstream(data: StudyData) -> pd.DataFrame:
    """Per cell: mean normalised downstream score (the y of loss-vs-performance)."""
    frame = _normalised_scores(data)
    return frame.groupby("cell_id")["norm"].mean().reset_index().rename(columns={"norm": "downstream"})


def correlations(data: StudyData) -> pd.DataFrame | str:
    """Pearson and Spearman correlation of final train / validation loss with the mean downstream score."""
    frame = losses(data)
    if not len(frame):
        return "no trained cells: no loss to correlate"
    joined = data.runs.merge(mean_downstream(data), on="cell_id")
    rows = []
    for column, name in (("final_train_loss", "train loss"), ("final_eval_loss", "validation loss")):
        pair = joined[[column, "downstream"]].dropna().astype(float)
        if len(pair) < 3 or pair[column].nunique() < 2 or pair["downstream"].nunique() < 2:
            rows.append({"loss": name, "cells": len(pair), "pearson": None, "spearman": None})
            continue
        rows.append(
            {
                "loss": name,
                "cells": len(pair),
                "pearson": float(pair[column].corr(pair["downstream"], method="pearson")),
                "spearman": float(pair[column].corr(pair["downstream"], method="spearman")),
            }
        )
    return pd.DataFrame(rows)


def cost_table(data: StudyData) -> pd.DataFrame:
    if not len(data.costs):
        return pd.DataFrame()
    frame = data.costs.merge(data.cells, on="cell_id")
    frame = frame[frame["trainable_params"].notna()].copy()  # trained cells; prompting has no training cost
    frame["peak_memory_gb"] = frame["peak_memory_bytes"] / 2**30
    frame["trainable_%"] = 100 * frame["trainable_ratio"]
    cols = ["dataset", "model", "method_label", "trainable_params", "trainable_%", "peak_memory_gb",
            "peak_memory_kind", "wall_time_s", "tokens_per_s", "eval_time_s"]  # fmt: skip
    return frame[cols].rename(columns={"method_label": "method", "wall_time_s": "train_time_s"})


def pareto(data: StudyData) -> pd.DataFrame:
    """Trained methods by peak training memory (cost) and mean normalised score; `frontier` marks
    those no other method beats on both."""
    costs = cost_table(data)
    scores = normalised(data)
    if not len(costs) or not len(scores):
        return pd.DataFrame()
    frame = (
        costs.groupby(["model", "dataset", "method"])["peak_memory_gb"].mean().reset_index()
        .merge(scores.rename(columns={"method_label": "method"}), on=["model", "dataset", "method"])
    )  # fmt: skip
    frontier = []
    for _, r in frame.iterrows():
        same = frame[(frame["model"] == r["model"]) & (frame["dataset"] == r["dataset"])]
        dominated = (
            (same["peak_memory_gb"] <= r["peak_memory_gb"])
            & (same["mean_normalised_score"] >= r["mean_normalised_score"])
            & (
                (same["peak_memory_gb"] < r["peak_memory_gb"])
                | (same["mean_normalised_score"] > r["mean_normalised_score"])
            )
        ).any()
        frontier.append(not dominated)
    return frame.assign(frontier=frontier)


def category_table(data: StudyData, prefix: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Rows training set x model x method, columns task x metric, for tasks whose name starts with prefix."""
    m = data.metrics[data.metrics["task"].str.startswith(prefix) & data.metrics["metric"].isin(metrics)]
    if not len(m):
        return pd.DataFrame()
    m = m.merge(data.cells, on="cell_id")
    m["column"] = m["task"].str.removeprefix(prefix) + " " + m["metric"]
    index = ["dataset", "model", "method_label"]  # never average over training sets
    return m.pivot_table(index=index, columns="column", values="value", aggfunc="mean").reset_index()


def prompting_vs_tuning(data: StudyData) -> pd.DataFrame:
    """Primary score of every task per dataset and model, methods grouped by kind."""
    scores = primary_scores(data)
    if not len(scores):
        return pd.DataFrame()
    scores["column"] = scores["task"] + " " + scores["metric"]
    table = scores.pivot_table(
        index=["dataset", "model", "kind", "method_label"], columns="column", values="value", aggfunc="mean"
    )
    return table.reset_index().sort_values(["dataset", "model", "kind"])


def joint_vs_separate(data: StudyData, joint: set[str]) -> pd.DataFrame | str:
    """For trained methods: each task's primary score under every training set, joint ones marked."""
    if not joint:
        return "no joint training set (a dataset entry with several sources) in this study"
    scores = primary_scores(data)
    scores = scores[scores["kind"] == "tuning"]
    if not len(scores):
        return "no trained cell finished yet"
    scores["dataset"] = scores["dataset"].map(lambda d: f"{d} (joint)" if d in joint else d)
    scores["column"] = scores["task"] + " " + scores["metric"]
    table = scores.pivot_table(index=["model", "method_label", "column"], columns="dataset", values="value")
    return table.reset_index()
