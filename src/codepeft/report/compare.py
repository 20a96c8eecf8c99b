"""Measured vs reference numbers: `codepeft report STUDY_DIR --compare REFERENCE.csv`.

The reference CSV (one row per published number; a user fills it from a paper's tables):

    model,method,task,metric,value,source
    starcoderbase-1b,LoRA,humanevalsynthesize-python,pass@1,0.178,"Astraios Table 3"

`model` and `method` are the study's model and method labels (as the report shows them), `task`
and `metric` codepeft's names, `value` on codepeft's scale (pass@1 as a fraction, chrF 0-100),
`source` free text. Each row is matched to the study's cell(s) (seed cells averaged) and the
measured value's own 95% interval; the reference "falls within" when it lies in that interval.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from codepeft.errors import CodepeftError
from codepeft.report.analysis import StudyData
from codepeft.report.findings import interval

REFERENCE_COLUMNS = ["model", "method", "task", "metric", "value", "source"]


def read_reference(path: str | Path) -> pd.DataFrame:
    """The reference CSV, checked: one error naming the file, the row and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CodepeftError(f"reference file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype={"model": str, "method": str, "task": str, "metric": str, "source": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CodepeftError(f"{path}: not a readable CSV ({err})") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise CodepeftError(
            f"{path}: missing column(s) {', '.join(missing)}; a reference CSV has {', '.join(REFERENCE_COLUMNS)}"
        )
    values = pd.to_numeric(frame["value"], errors="coerce")
    for i in frame.index[values.isna()]:
        raise CodepeftError(f"{path}, row {i + 2}: value {frame.loc[i, 'value']!r} is not a number")
    return frame.assign(value=values)


def compare(data: StudyData, reference: pd.DataFrame) -> pd.DataFrame:
    """One row per reference number: the measured value, its interval, the difference and
    whether the reference lies within the measurement's interval (None where not measured)."""
    metrics = data.metrics.merge(data.cells[["cell_id", "model", "method_label"]], on="cell_id")
    rows = []
    for _, ref in reference.iterrows():
        hit = metrics[
            (metrics["model"] == ref["model"])
            & (metrics["method_label"] == ref["method"])
            & (metrics["task"] == ref["task"])
            & (metrics["metric"] == ref["metric"])
        ]
        row = {c: ref[c] for c in REFERENCE_COLUMNS if c != "value"} | {"reference": ref["value"]}
        if not len(hit):
            rows.append({**row, "measured": None, "ci_low": None, "ci_high": None, "difference": None, "within": None})
            continue
        measured = float(hit["value"].mean())
        cells = data.cells[data.cells["cell_id"].isin(hit["cell_id"])]
        low, high = interval(data, cells, ref["task"], ref["metric"]) or (hit["ci_low"].min(), hit["ci_high"].max())
        within = None if pd.isna(low) or pd.isna(high) else bool(low <= ref["value"] <= high)
        rows.append({**row, "measured": measured, "ci_low": low, "ci_high": high,
                     "difference": measured - ref["value"], "within": within})  # fmt: skip
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame, path: Path) -> Path | str:
    """Measured against reference per cell, with the measurement's interval and the diagonal."""
    measured = table.dropna(subset=["measured"])
    if not len(measured):
        return "no reference number matches a measured cell"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    for metric, group in measured.groupby("metric"):
        err = [
            (group["measured"] - group["ci_low"]).clip(lower=0).fillna(0),
            (group["ci_high"] - group["measured"]).clip(lower=0).fillna(0),
        ]
        ax.errorbar(group["reference"], group["measured"], yerr=err, fmt="o", capsize=3, label=metric)
    lo = min(measured["reference"].min(), measured["ci_low"].min(skipna=True), measured["measured"].min())
    hi = max(measured["reference"].max(), measured["ci_high"].max(skipna=True), measured["measured"].max())
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="measured = reference")
    ax.set_xlabel("reference")
    ax.set_ylabel("measured (95% interval)")
    ax.set_title("Measured vs reference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
