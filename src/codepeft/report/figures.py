"""Figures of the report (matplotlib, PNG). Each returns the file it wrote, or a note saying why
the data cannot support the figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from codepeft.report import analysis as A  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _panels(n: int, width: float = 4.8, height: float = 3.4):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _size(s) -> str:
    return "size unknown" if pd.isna(s) else A.human_count(s)


def ranking(data: A.StudyData, path: Path) -> Path | str:
    frame = A.ranking(data)
    if not len(frame):
        return "no downstream scores yet: nothing to rank"
    groups = list(frame.sort_values("model_size").groupby(["model", "dataset"], sort=False))
    fig, axes = _panels(len(groups), height=0.35 * max(len(g) for _, g in groups) + 1.2)
    for ax, ((model, dataset), part) in zip(axes, groups, strict=True):
        part = part.sort_values("mean_normalised_score")
        colours = ["tab:gray" if k != "tuning" else "tab:blue" for k in part["kind"]]
        ax.barh(part["method_label"], part["mean_normalised_score"], color=colours)
        ax.set_xlim(0, 1)
        ax.set_xlabel("mean normalised score (higher is better)")
        ax.set_title(f"{model} ({_size(part['model_size'].iloc[0])}), trained on {dataset}", fontsize=9)
    fig.suptitle("Overall ranking per model\n(grey: zero-shot and prompting baselines)", fontsize=10)
    return _save(fig, path)


def loss_vs_size(data: A.StudyData, path: Path) -> Path | str:
    frame = A.losses(data)
    if not len(frame) or frame["model_size"].nunique() < 2:
        return "one model size only: no scale trend to draw (add models of several sizes to the study)"
    fig, axes = _panels(2)
    for ax, column, title in zip(axes, ("final_train_loss", "final_valid_loss"), ("train", "validation"), strict=True):
        several = frame["dataset"].nunique() > 1
        for (method, dataset), part in frame.groupby(["method", "dataset"]):
            part = part.groupby("model_size")[column].mean().reset_index()
            ax.plot(part["model_size"], part[column], marker="o", label=f"{method} ({dataset})" if several else method)
        ax.set_xscale("log")
        ax.set_xlabel("model parameters")
        ax.set_ylabel(f"final {title} loss")
        ax.set_title(f"final {title} loss vs model size")
    axes[-1].legend(fontsize=7)
    return _save(fig, path)


def loss_curves(data: A.StudyData, path: Path) -> Path | str:
    curves = data.curves[data.curves["split"] != "train"] if len(data.curves) else data.curves
    if not len(curves):
        return "no evaluation loss was logged during training"
    curves = curves.merge(data.cells, on="cell_id")
    groups = list(curves.groupby(["model", "dataset"]))[:6]
    fig, axes = _panels(len(groups))
    for ax, ((model, dataset), part) in zip(axes, groups, strict=True):
        for method, m in part.groupby("method_label"):
            m = m.groupby("step")["loss"].mean().reset_index()
            ax.plot(m["step"], m["loss"], marker=".", label=method)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{model} on {dataset}")
    axes[-1].legend(fontsize=7)
    return _save(fig, path)


def params_vs_loss(data: A.StudyData, path: Path) -> Path | str:
    frame = A.losses(data).dropna(subset=["trainable_params", "final_valid_loss"]) if len(data.runs) else []
    if len(frame) < 2:
        return "fewer than two trained cells with a validation loss"
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for model, part in frame.groupby("model"):
        ax.scatter(part["trainable_params"], part["final_valid_loss"], label=model)
        for _, r in part.iterrows():
            ax.annotate(r["method"], (r["trainable_params"], r["final_valid_loss"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("final validation loss")
    ax.set_title("trainable parameters vs final validation loss")
    ax.legend(fontsize=7)
    return _save(fig, path)


def loss_vs_score(data: A.StudyData, path: Path) -> Path | str:
    joined = (
        data.runs.merge(A.mean_downstream(data), on="cell_id").merge(data.cells, on="cell_id")
        if len(data.runs)
        else pd.DataFrame()
    )
    joined = joined.dropna(subset=["final_eval_loss", "downstream"]) if len(joined) else joined
    if len(joined) < 3:
        return "fewer than three trained cells with both a validation loss and downstream scores"
    corr = A.correlations(data)
    test = corr[corr["loss"] == "validation loss"].iloc[0]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(joined["final_eval_loss"], joined["downstream"])
    for _, r in joined.iterrows():
        ax.annotate(r["method_label"], (r["final_eval_loss"], r["downstream"]), fontsize=7)
    ax.set_xlabel("final validation loss")
    ax.set_ylabel("mean normalised downstream score")
    stats = (
        f"Pearson {test['pearson']:.2f}, Spearman {test['spearman']:.2f}"
        if pd.notna(test["pearson"])
        else "correlation undefined (constant values)"
    )
    ax.set_title(f"validation loss vs downstream score ({stats}, {len(joined)} cells)", fontsize=9)
    return _save(fig, path)


def memory(data: A.StudyData, path: Path) -> Path | str:
    frame = A.cost_table(data)
    if not len(frame):
        return "no trained cell: no training cost to show"
    models = frame["model"].unique().tolist()
    fig, axes = _panels(len(models))
    for ax, model in zip(axes, models, strict=True):
        part = frame[frame["model"] == model].groupby("method")["peak_memory_gb"].mean().sort_values()
        ax.bar(part.index, part.values)
        ax.set_ylabel(f"peak memory, GB ({frame['peak_memory_kind'].iloc[0]})")
        ax.set_title(f"peak training memory: {model}")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    return _save(fig, path)


def pareto(data: A.StudyData, path: Path) -> Path | str:
    frame = A.pareto(data)
    if len(frame) < 2:
        return "fewer than two trained methods with scores: no trade-off to draw"
    groups = list(frame.sort_values("model_size").groupby(["model", "dataset"], sort=False))
    fig, axes = _panels(len(groups))
    for ax, ((model, dataset), part) in zip(axes, groups, strict=True):
        ax.scatter(
            part["peak_memory_gb"],
            part["mean_normalised_score"],
            c=part["frontier"].map({True: "tab:red", False: "tab:gray"}),
        )
        front = part[part["frontier"]].sort_values("peak_memory_gb")
        ax.step(front["peak_memory_gb"], front["mean_normalised_score"], where="post", color="tab:red", alpha=0.5)
        for _, r in part.iterrows():
            ax.annotate(
                r["method"] + (" *" if r["frontier"] else ""),
                (r["peak_memory_gb"], r["mean_normalised_score"]),
                fontsize=7,
            )
        ax.set_xlabel("peak training memory (GB)")
        ax.set_ylabel("mean normalised score")
        ax.set_title(f"cost vs score: {model} on {dataset} (* on the frontier)", fontsize=9)
    return _save(fig, path)


def grouped_bars(table: pd.DataFrame, path: Path, title: str, empty: str) -> Path | str:
    if not len(table):
        return empty
    label = table["model"] + " " + table["method_label"]
    if table["dataset"].nunique() > 1:
        label = label + " (" + table["dataset"] + ")"
    values = table.set_index(label).drop(columns=["dataset", "model", "method_label"])
    ax = values.plot.bar(figsize=(max(6, 0.6 * values.size), 4))
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.legend(fontsize=7)
    return _save(ax.figure, path)
