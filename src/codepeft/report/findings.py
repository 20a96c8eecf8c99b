"""Which differences between methods are real: paired tests on the same problems, the ranking
they support, and the two studies' claims checked against a study's data.

For every model, training set and task, every pair of methods is tested on the problems both
were evaluated on (`codepeft.report.stats`): exact McNemar for greedy pass@1, a paired
permutation test for sampled pass@k, a paired approximate randomization test for match metrics
and losses (interval: paired bootstrap); p-values are Holm-corrected across the pairs of one task.
A method with several seeds (cells) is compared on its per-problem seed means.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from codepeft import stats
from codepeft.metrics import pass_at_k
from codepeft.metrics.per_problem import corpus_chrf, paired_metric
from codepeft.report.analysis import LOWER_IS_BETTER, StudyData, primary_metric

ALPHA = 0.05
COLUMNS = [
    "model", "dataset", "task", "metric", "a", "b", "problems", "a_score", "b_score", "difference",
    "ci_low", "ci_high", "test", "p", "p_holm", "significant", "better", "problems_needed", "a_seeds", "b_seeds",
]  # fmt: skip


def per_method(data: StudyData, cells: pd.DataFrame, task: str, metric: str) -> dict[str, pd.Series]:
    """Per-problem values of each method (label) among `cells` for `task`: pass@k estimates,
    per-problem scores, or chrF statistics (arrays); seed cells averaged per problem."""
    pm = paired_metric(metric)
    if pm is None or not len(data.problems):
        return {}
    rows = data.problems[(data.problems["task"] == task) & (data.problems["metric"] == pm)]
    rows = rows.merge(cells[["cell_id", "method_label"]], on="cell_id")
    k = int(metric.rsplit("@", 1)[1]) if "@" in metric and pm == "pass" else None
    out = {}
    for label, group in rows.groupby("method_label"):
        if pm == "chrf":
            values = group.apply(lambda r: np.asarray(r["detail"], dtype=float), axis=1)
        elif k is not None:
            if (group["n"] < k).any():
                continue  # too few samples for pass@k
            values = group.apply(lambda r: pass_at_k(int(r["n"]), int(r["c"]), k), axis=1)
        else:
            values = group["value"].astype(float)
        frame = pd.DataFrame({"problem": group["problem"].values, "v": list(values)})
        seeds = group["cell_id"].nunique()
        series = frame.groupby("problem")["v"].agg(lambda vs: np.mean(np.stack(list(vs)), axis=0))
        series.attrs["seeds"] = seeds
        out[label] = series
    return out


def interval(data: StudyData, cells: pd.DataFrame, task: str, metric: str) -> tuple[float, float] | None:
    """95% interval of `metric` for these cells (one method; seed cells averaged per problem),
    from the per-problem scores: Wilson for a greedy pass rate or exact match, a bootstrap over
    problems (BCa) for sampled pass@k, corpus chrF and losses, within the metric's range."""
    methods = per_method(data, cells.assign(method_label="_"), task, metric)
    if "_" not in methods:
        return None
    values = np.stack(list(methods["_"].values))
    pm, bounds = paired_metric(metric), stats.metric_bounds(metric)
    if pm in ("pass", "em", "correct") and np.isin(values, (0, 1)).all():
        return stats.wilson(int(values.sum()), len(values))
    return stats.bootstrap_ci(values, bounds=bounds, statistic=corpus_chrf if pm == "chrf" else None)


def _summary(values: np.ndarray, pm: str) -> float:
    return corpus_chrf(values) if pm == "chrf" else float(np.mean(values))


def compare_pair(a: pd.Series, b: pd.Series, metric: str, seed: int = 0) -> dict | None:
    """The paired test of two methods' per-problem values on their common problems."""
    pm = paired_metric(metric)
    common = sorted(set(a.index) & set(b.index))
    if not common:
        return None
    x, y = np.stack([a[p] for p in common]), np.stack([b[p] for p in common])
    binary = (
        pm in ("pass", "correct", "em")
        and (pm == "correct" or metric.endswith("@1"))
        and np.isin(x, (0, 1)).all()
        and np.isin(y, (0, 1)).all()
    )
    if binary:
        c = stats.mcnemar_exact(x.astype(bool), y.astype(bool), seed=seed)
        needed = stats.mcnemar_problems_needed(c.a_only, c.b_only, c.problems)
    elif pm in ("pass", "correct"):  # sampled pass@k, or seed means
        c = stats.paired_permutation(x, y, seed=seed)
        needed = stats.paired_problems_needed(x, y)
    else:
        metric_fn = corpus_chrf if pm == "chrf" else None
        c = stats.paired_randomization(x, y, metric=metric_fn, seed=seed)
        if pm == "chrf":  # power from sentence-level chrF of each problem
            sx = np.array([corpus_chrf([v]) for v in x])
            sy = np.array([corpus_chrf([v]) for v in y])
            needed = stats.paired_problems_needed(sx, sy)
        else:
            needed = stats.paired_problems_needed(x, y)
    return {
        "problems": c.problems,
        "a_score": _summary(x, pm),
        "b_score": _summary(y, pm),
        "difference": c.difference,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "test": c.test,
        "p": c.pvalue,
        "problems_needed": needed,
    }


def comparisons(data: StudyData) -> pd.DataFrame:
    """Every pair of methods per model, training set and task, with the paired test, the
    Holm-corrected p-value (across the pairs of that task) and which method is better."""
    rows = []
    if not len(data.cells) or not len(data.metrics):
        return pd.DataFrame(columns=COLUMNS)
    for (model, dataset), cells in data.cells.groupby(["model", "dataset"]):
        for task in sorted(set(data.metrics[data.metrics["cell_id"].isin(cells["cell_id"])]["task"])):
            metric = primary_metric(data.metrics, task)
            if metric is None:
                continue
            methods = per_method(data, cells, task, metric)
            task_rows = []
            for a, b in combinations(sorted(methods), 2):
                result = compare_pair(methods[a], methods[b], metric)
                if result is None:
                    continue
                task_rows.append(
                    {"model": model, "dataset": dataset, "task": task, "metric": metric, "a": a, "b": b, **result,
                     "a_seeds": methods[a].attrs["seeds"], "b_seeds": methods[b].attrs["seeds"]}
                )  # fmt: skip
            for row, adjusted in zip(task_rows, stats.holm([r["p"] for r in task_rows]), strict=True):
                row["p_holm"] = adjusted
                row["significant"] = adjusted < ALPHA
                row["better"] = _better(row) if row["significant"] else None
            rows += task_rows
    return pd.DataFrame(rows, columns=COLUMNS)


def _better(row: dict) -> str | None:
    if row["difference"] == 0:
        return None
    higher = row["difference"] > 0
    if row["metric"] in LOWER_IS_BETTER:
        higher = not higher
    return row["a"] if higher else row["b"]


def wins(comps: pd.DataFrame) -> pd.DataFrame:
    """Significant wins and losses of each method per model and training set, over the
    downstream tasks (held-out loss is not a downstream score)."""
    downstream = comps[~comps["task"].str.endswith("-loss")]
    rows = []
    for (model, dataset), group in downstream.groupby(["model", "dataset"]):
        for method in sorted(set(group["a"]) | set(group["b"])):
            mine = group[(group["a"] == method) | (group["b"] == method)]
            sig = mine[mine["significant"]]
            won, lost = int((sig["better"] == method).sum()), int((sig["better"] != method).sum())
            rows.append({"model": model, "dataset": dataset, "method": method, "wins": won, "losses": lost,
                         "net": won - lost, "pairs": len(mine)})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "dataset", "method", "wins", "losses", "net", "pairs"])


def significance_ranking(comps: pd.DataFrame) -> pd.DataFrame:
    """Methods ranked by significant wins minus losses (a Copeland count over the pairs that
    survive the tests); methods with the same count share a rank: their order is not supported."""
    frame = wins(comps)
    if not len(frame):
        return frame
    frame["rank"] = frame.groupby(["model", "dataset"])["net"].rank(ascending=False, method="min").astype(int)
    return frame.sort_values(["model", "dataset", "rank", "method"]).reset_index(drop=True)


def task_findings(comps: pd.DataFrame, reference: str = "zero-shot") -> list[dict]:
    """Per model, training set and task: what is and is not supported, in sentences."""
    out = []
    for (model, dataset, task), group in comps.groupby(["model", "dataset", "task"], sort=True):
        metric = group["metric"].iloc[0]
        sig, null = group[group["significant"]], group[~group["significant"]]
        lines = []
        vs_ref = sig[(sig["a"] == reference) | (sig["b"] == reference)]
        for _, r in vs_ref.iterrows():
            other = r["b"] if r["a"] == reference else r["a"]
            verb = "beats" if r["better"] == other else "is worse than"
            lines.append(f"{other} {verb} {reference} ({_gap(r, other)})")
        for _, r in sig.drop(vs_ref.index).iterrows():
            loser = r["b"] if r["better"] == r["a"] else r["a"]
            lines.append(f"{r['better']} beats {loser} ({_gap(r, r['better'])})")
        if len(null):
            widest = null.loc[null["difference"].abs().idxmax()]
            need = widest["problems_needed"]
            need_text = (
                "has no gap to detect"
                if not np.isfinite(need)
                else f"would need about {int(need)} problems to detect it"
            )
            lines.append(
                f"{len(null)} of {len(group)} pairs are not distinguishable from noise; the largest such gap, "
                f"{widest['a']} vs {widest['b']} ({widest['difference']:+.3g} on {int(widest['problems'])} problems), "
                f"{need_text} (80% power, alpha {ALPHA})"
            )
        out.append({"model": model, "dataset": dataset, "task": task, "metric": metric, "lines": lines,
                    "significant": int(len(sig)), "pairs": int(len(group))})  # fmt: skip
    return out


def _gap(r, winner: str) -> str:
    sign = 1 if winner == r["a"] else -1
    low, high = sorted((sign * r["ci_low"], sign * r["ci_high"]))
    return (
        f"{r['metric']} {sign * r['difference']:+.3g} [{low:+.3g}, {high:+.3g}], {r['test']}, "
        f"Holm p={r['p_holm']:.3g}, {int(r['problems'])} problems"
    )


def _isolation_line(data: StudyData) -> list[str]:
    """Where generated programs ran: said once at the top, and loudly when below namespaces."""
    from codepeft.report.analysis import isolation_levels

    levels = isolation_levels(data)
    if not levels:
        return []
    if set(levels) == {"bwrap"}:
        return ["Generated programs ran in the bubblewrap sandbox (namespaces, no network) for every execution score."]
    weak = ", ".join(f"{lv}: {n} cell x task" for lv, n in sorted(levels.items()) if lv != "bwrap")
    return [
        f"Warning: some execution scores ran below namespaces ({weak}); docs/tasks.md says what that level "
        "leaves open. The level is next to each score."
    ]


def summary(data: StudyData, comps: pd.DataFrame) -> list[str]:
    """The top of the report: what was run, and per task the best method and whether the tests
    say it is better than the others."""
    from codepeft.report.analysis import primary_scores

    cells = data.cells
    lines = [
        f"{cells['model'].nunique()} model(s) ({', '.join(sorted(cells['model'].unique()))}), "
        f"{cells['method_label'].nunique()} methods, {cells['dataset'].nunique()} training set(s), "
        f"{data.metrics['task'].nunique()} tasks; {len(cells)} cells done."
    ]
    lines += _isolation_line(data)
    scores = primary_scores(data)
    for (model, dataset, task), group in scores.groupby(["model", "dataset", "task"], sort=True):
        metric = group["metric"].iloc[0]
        means = group.groupby("method_label")["value"].mean().dropna()
        if means.empty:
            continue
        best = means.idxmin() if metric in LOWER_IS_BETTER else means.idxmax()
        ties = sorted(m for m, v in means.items() if m != best and v == means[best])
        mine = comps[(comps["model"] == model) & (comps["dataset"] == dataset) & (comps["task"] == task)]
        mine = mine[(mine["a"] == best) | (mine["b"] == best)]
        beaten = sorted(set(mine.loc[mine["better"] == best, ["a", "b"]].stack()) - {best})
        others = len(means) - 1
        if len(ties) == others:
            lines.append(f"{task} ({model}, {dataset}): every method scores {metric} {means[best]:.4g}.")
            continue
        if ties:
            verdict = f"tied with {', '.join(ties)}"
        elif not beaten:
            verdict = f"not significantly better than any of the {others} others"
        elif len(beaten) == others:
            verdict = f"significantly better than all {others} others"
        else:
            verdict = f"significantly better than {len(beaten)} of {others} others ({', '.join(beaten)})"
        lines.append(f"{task} ({model}, {dataset}): best {metric} {means[best]:.4g} by {best}, {verdict}.")
    return lines
