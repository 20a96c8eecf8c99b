"""`write_report(STUDY_DIR)`: tables (Markdown, CSV, LaTeX), figures (PNG) and one self-contained
HTML page, from the results store alone."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import pandas as pd

from codepeft.report import analysis as A
from codepeft.report import claims as C
from codepeft.report import figures as F
from codepeft.report import findings as S
from codepeft.report.compare import compare, read_reference
from codepeft.report.compare import figure as compare_figure
from codepeft.study.store import open_store


def _write_table(frame: pd.DataFrame, directory: Path, name: str) -> None:
    frame.to_csv(directory / f"{name}.csv", index=False)  # exact numbers; Markdown and HTML for reading
    (directory / f"{name}.md").write_text(A.for_reading(frame).to_markdown(index=False, floatfmt=".4g") + "\n")
    (directory / f"{name}.tex").write_text(frame.to_latex(index=False, float_format="%.4g", na_rep="--"))


def _joint_sets(directory: Path) -> set[str]:
    import yaml

    path = directory / "study.yaml"
    if not path.is_file():
        return set()
    config = yaml.safe_load(path.read_text())
    return {d["name"] for d in config.get("datasets", []) if len(d.get("train", [])) > 1}


def write_report(directory: str | Path, reference: str | Path | None = None) -> Path:
    """Write STUDY_DIR/report/ and return its index.html; with `reference` (a CSV of published
    numbers, `codepeft.report.compare`), also the measured-vs-reference table and figure."""
    directory = Path(directory)
    ref_frame = read_reference(reference) if reference is not None else None  # bad input: before any writing
    store = open_store(directory)
    try:
        data = A.load(store)
        cells = pd.DataFrame(store.rows("cells"))
    finally:
        store.close()
    out = directory / "report"
    tables_dir, figures_dir = out / "tables", out / "figures"
    for folder in (tables_dir, figures_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():  # a figure the data no longer supports must not linger
            stale.unlink()

    sections: list[tuple[str, str, pd.DataFrame | str | None, Path | str | None]] = []

    def table(title: str, name: str, frame: pd.DataFrame | str, about: str, figure: Path | str | None = None):
        if isinstance(frame, pd.DataFrame) and len(frame):
            _write_table(frame, tables_dir, name)
        sections.append((title, about, frame, figure))

    status = cells.groupby("status").size().to_dict() if len(cells) else {}
    if not len(data.metrics):  # every cell failed or none has run: say so rather than plot nothing
        counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "no cells"
        note = f"No cell has recorded results yet ({counts}); see `codepeft study status`."
        sections.append(("Results", note, None, None))
        return _finish(directory, out, status, sections)
    if ref_frame is not None:
        measured_vs_reference = compare(data, ref_frame)  # bootstraps intervals: computed once
        table(
            "Measured vs reference",
            "compare",
            measured_vs_reference,
            f"Each number of {Path(reference).name} beside the measured value and its 95% interval; `within`: the "
            "reference lies inside the measurement's interval (empty: no such cell, or no interval).",
            compare_figure(measured_vs_reference, figures_dir / "compare.png"),
        )
    table(
        "Scores",
        "scores",
        A.score_table(data),
        "Every metric of every task (95% CI in brackets; ±sd over seeds for ICL).",
    )
    comps = S.comparisons(data)
    if len(comps):
        _write_table(comps, tables_dir, "comparisons")
    table(
        "Findings",
        "findings",
        _findings_frame(comps),
        "What the paired tests support, per model, training set and task: every pair of methods on the same "
        f"problems (exact McNemar for greedy pass@1, paired permutation for sampled pass@k, paired randomization for "
        f"match metrics and losses), Holm-corrected across the pairs of a task, alpha {S.ALPHA}. Every pair: "
        "tables/comparisons.csv.",
    )
    joint = _joint_sets(directory)
    table(
        "The two studies' claims on this data",
        "claims",
        pd.DataFrame(
            [{**c, "evidence": "; ".join(c["evidence"])} for c in C.claims(data, comps, joint)],
            columns=["claim", "source", "verdict", "evidence"],
        ),
        "Supported or contradicted only by differences that survive the tests; undecided otherwise "
        "(a match needs every interval within 5% of the metric's scale).",
    )
    table(
        "Overall ranking",
        "ranking",
        _ranking(data, comps),
        "Methods ranked by significant wins minus losses over the downstream tasks (pairs that survive the "
        "tests); equal counts share a rank, because the data does not order them. The mean normalised score "
        f"(min-max per task, {A.ranking_basis(data)}) is shown but does not rank.",
        F.ranking(data, figures_dir / "ranking.png"),
    )
    table(
        "Loss",
        "loss",
        A.losses(data),
        "Final train and validation loss of each trained cell (the validation split of its training set; the "
        "loss tasks' held-out loss is in the scores table).",
        F.loss_vs_size(data, figures_dir / "loss_vs_size.png"),
    )
    sections.append(
        ("Validation loss during training", "Loss on the training set's validation split at each evaluation step.",
         None, F.loss_curves(data, figures_dir / "loss_curves.png"))
    )  # fmt: skip
    sections.append(
        ("Trainable parameters vs loss", "", None, F.params_vs_loss(data, figures_dir / "params_vs_loss.png"))
    )
    table(
        "Does loss predict performance?",
        "correlations",
        A.correlations(data),
        "Correlation of final loss with the mean normalised downstream score over trained cells.",
        F.loss_vs_score(data, figures_dir / "loss_vs_score.png"),
    )
    robust = A.category_table(data, "recode-", ("robust_pass@1", "robust_drop@1", "robust_relative@1", "nominal@1"))
    table(
        "Robustness (ReCode)",
        "robustness",
        robust if len(robust) else "no ReCode task in this study (add recode-docstring, -function, -syntax, -format)",
        "Robust pass, drop and relative @1 per perturbation category.",
        F.grouped_bars(
            A.category_table(data, "recode-", ("robust_pass@1",)),
            figures_dir / "robustness.png",
            "Robust pass@1 per category",
            "no ReCode task in this study",
        ),
    )
    security = A.category_table(data, "security-", ("valid_rate", "insecure_rate"))
    table(
        "Security",
        "security",
        security if len(security) else "no security task in this study (add security-python)",
        "Valid rate (parses) and insecure rate (bandit flags the scenario's weakness, among valid programs).",
        F.grouped_bars(security, figures_dir / "security.png", "Security", "no security task in this study"),
    )
    table(
        "Cost",
        "costs",
        A.cost_table(data),
        "Training cost of each trained cell: parameters, peak memory, time and throughput.",
        F.memory(data, figures_dir / "memory.png"),
    )
    front = A.pareto(data)
    table(
        "Cost vs score",
        "pareto",
        front,
        "On the frontier: "
        + (", ".join(f"{r.method} ({r.model})" for r in front[front["frontier"]].itertuples()) if len(front) else "-"),
        F.pareto(data, figures_dir / "pareto.png"),
    )
    table(
        "Tuning vs prompting",
        "tuning_vs_prompting",
        A.prompting_vs_tuning(data),
        "Primary score per task for tuned methods, prompting baselines (ICL, RAG) and zero-shot.",
    )
    table(
        "Joint vs separate training",
        "joint_vs_separate",
        A.joint_vs_separate(data, joint),
        "Each task's primary score for adapters trained on one set and on the union.",
    )
    return _finish(directory, out, status, sections, S.summary(data, comps))


def _findings_frame(comps: pd.DataFrame) -> pd.DataFrame | str:
    found = S.task_findings(comps)
    if not found:
        return "no two methods were evaluated on the same problems yet"
    rows = [
        {"model": f["model"], "training set": f["dataset"], "task": f["task"], "metric": f["metric"], "finding": line}
        for f in found
        for line in f["lines"] or ["no pair of methods to compare"]
    ]
    return pd.DataFrame(rows)


def _ranking(data: A.StudyData, comps: pd.DataFrame) -> pd.DataFrame:
    ranked = S.significance_ranking(comps)
    scores = A.normalised(data)
    if not len(ranked):
        return A.ranking(data)
    if len(scores):
        scores = scores.rename(columns={"method_label": "method"})[
            ["model", "dataset", "method", "mean_normalised_score"]
        ]
        ranked = ranked.merge(scores, on=["model", "dataset", "method"], how="left")
    return ranked[["model", "dataset", "rank", "method", "wins", "losses", "net", "pairs",
                   *(["mean_normalised_score"] if "mean_normalised_score" in ranked else [])]]  # fmt: skip


def _finish(directory: Path, out: Path, status: dict, sections: list, summary: list[str] | None = None) -> Path:
    page = out / "index.html"
    page.write_text(_html(directory, status, sections, summary or []))
    (out / "report.json").write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "cells": status}))
    return page


def _figure_html(figure: Path | str | None) -> str:
    if figure is None:
        return ""
    if isinstance(figure, str):
        return f'<p class="note">Figure not drawn: {html.escape(figure)}.</p>'
    data = base64.b64encode(figure.read_bytes()).decode()
    return f'<img alt="{figure.stem}" src="data:image/png;base64,{data}">'


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _html(directory: Path, status: dict, sections, summary: list[str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>codepeft report: {html.escape(directory.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3}.note{color:#8a5a00}img{max-width:100%}</style></head><body>",
        f"<h1>Study report: {html.escape(directory.name)}</h1>",
        f"<p>Cells: {html.escape(', '.join(f'{v} {k}' for k, v in sorted(status.items())) or 'none')}. "
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {html.escape(str(directory / 'results.sqlite'))}.</p>",
    ]
    if summary:
        parts.append("<h2 id='summary'>Summary</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in summary]
        parts.append("</ul>")
    links = " · ".join(f"<a href='#{_anchor(t)}'>{html.escape(t)}</a>" for t, *_ in sections)
    parts.append(f"<nav><b>Contents:</b> {links}</nav>")
    for title, about, frame, figure in sections:
        parts.append(f"<h2 id='{_anchor(title)}'>{html.escape(title)}</h2>")
        if about:
            parts.append(f"<p>{html.escape(about)}</p>")
        if isinstance(frame, str):
            parts.append(f'<p class="note">{html.escape(frame)}.</p>')
        elif isinstance(frame, pd.DataFrame):
            readable = A.for_reading(frame)
            parts.append(
                readable.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="–")
                if len(frame)
                else '<p class="note">No data yet.</p>'
            )
        parts.append(_figure_html(figure))
    parts.append("</body></html>")
    return "\n".join(parts)
