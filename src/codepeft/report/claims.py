"""The two studies' claims, each judged supported / contradicted / undecided on a study's data.

A claim is judged from the paired tests (`findings.comparisons`): "A beats B" counts the
downstream tasks where A is significantly better than B minus those where B is significantly
better than A (after Holm correction). "Matches" needs more than no significant difference:
every 95% interval of the difference must lie within an equivalence margin of 5% of the
metric's scale (0.05 for rates, 5 chrF points, 5% of the loss), else the data cannot tell.
Every verdict comes with its evidence; a claim the study's grid cannot test says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from codepeft.families import MethodFamily
from codepeft.report.analysis import StudyData, losses, mean_downstream, primary_metric
from codepeft.report.findings import compare_pair, per_method

SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "undecided"


def _net(comps: pd.DataFrame, a: str, b: str) -> int:
    """Downstream tasks where a is significantly better than b, minus the reverse."""
    pair = comps[~comps["task"].str.endswith("-loss") & comps["significant"]]
    pair = pair[((pair["a"] == a) & (pair["b"] == b)) | ((pair["a"] == b) & (pair["b"] == a))]
    return int((pair["better"] == a).sum() - (pair["better"] == b).sum())


def _labels(data: StudyData, model: str, dataset: str, pick: Callable[[pd.Series], bool]) -> list[str]:
    cells = data.cells[(data.cells["model"] == model) & (data.cells["dataset"] == dataset)]
    return sorted({r["method_label"] for _, r in cells.iterrows() if pick(r)})


def _is_peft(r: pd.Series) -> bool:
    return r["kind"] == "tuning" and r["family"] != MethodFamily.FULL


def _groups(comps: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(comps["model"], comps["dataset"], strict=True))) if len(comps) else []


def fft_best(data: StudyData, comps: pd.DataFrame) -> dict:
    evidence, verdicts = [], []
    for model, dataset in _groups(comps):
        fft = _labels(data, model, dataset, lambda r: r["family"] == MethodFamily.FULL)
        others = _labels(data, model, dataset, lambda r: r["family"] != MethodFamily.FULL)
        for f in fft:
            nets = {o: _net(comps, f, o) for o in others}
            behind = [o for o, n in nets.items() if n < 0]
            ahead = [o for o, n in nets.items() if n > 0]
            evidence.append(f"{model}/{dataset}: {f} significantly ahead of {len(ahead)} of {len(nets)} methods"
                            + (f", behind {', '.join(behind)}" if behind else ""))  # fmt: skip
            verdicts.append(
                CONTRADICTED if behind else SUPPORTED if nets and len(ahead) * 2 >= len(nets) else UNDECIDED
            )
    return _claim("Full fine-tuning is best overall", "Astraios", verdicts, evidence, "no full fine-tuning cell")


def lora_tradeoff(data: StudyData, comps: pd.DataFrame) -> dict:
    evidence, verdicts = [], []
    params = (
        data.costs.merge(data.cells, on="cell_id").groupby("method_label")["trainable_params"].mean()
        if len(data.costs)
        else pd.Series(dtype=float)
    )
    for model, dataset in _groups(comps):
        peft = _labels(data, model, dataset, _is_peft)
        for lora in _labels(data, model, dataset, lambda r: r["method"] == "lora"):
            rivals = [m for m in peft if m != lora]
            nets = {m: _net(comps, lora, m) for m in rivals}
            cheaper_better = [m for m in rivals if nets[m] < 0 and params.get(m, np.inf) <= params.get(lora, 0)]
            ahead = [m for m in rivals if nets[m] > 0]
            evidence.append(f"{model}/{dataset}: lora significantly ahead of {len(ahead)} of {len(rivals)} PEFT methods"
                            + (f"; beaten at no more trainable parameters by {', '.join(cheaper_better)}"
                               if cheaper_better else ""))  # fmt: skip
            if cheaper_better:
                verdicts.append(CONTRADICTED)
            elif rivals and ahead and all(n >= 0 for n in nets.values()):
                verdicts.append(SUPPORTED)
            else:
                verdicts.append(UNDECIDED)
    return _claim("LoRA is the best PEFT trade-off", "Astraios; Weyssow et al.", verdicts, evidence,
                  "no LoRA cell beside other PEFT methods")  # fmt: skip


def peft_beats_prompting(data: StudyData, comps: pd.DataFrame) -> dict:
    evidence, verdicts = [], []
    for model, dataset in _groups(comps):
        peft = _labels(data, model, dataset, _is_peft)
        prompting = _labels(data, model, dataset, lambda r: r["family"] == MethodFamily.BASELINE)
        if not peft or not prompting:
            continue
        for base in prompting:
            beaten_by = [p for p in peft if _net(comps, p, base) > 0]
            beats = [p for p in peft if _net(comps, p, base) < 0]
            evidence.append(f"{model}/{dataset}: {base} significantly behind {len(beaten_by)} and ahead of "
                            f"{len(beats)} of {len(peft)} PEFT methods")  # fmt: skip
            if len(beats) * 2 > len(peft):
                verdicts.append(CONTRADICTED)
            elif beaten_by and not beats:
                verdicts.append(SUPPORTED)
            else:
                verdicts.append(UNDECIDED)
    return _claim("PEFT beats ICL and RAG", "Weyssow et al.", verdicts, evidence, "no ICL/RAG cell beside PEFT")


def larger_less_robust(data: StudyData) -> dict:
    from scipy.stats import spearmanr

    evidence, verdicts = [], []
    sizes = data.cells.set_index("cell_id")["model_size"]
    if sizes.dropna().nunique() < 2:
        return _claim("Larger models are less robust (ReCode) and less secure", "Astraios", [], [],
                      "one model size: no trend to test")  # fmt: skip
    for label, metric, sign in (("robustness", "robust_drop@1", 1), ("security", "insecure_rate", 1)):
        rows = data.metrics[(data.metrics["metric"] == metric)].copy()
        rows["size"] = rows["cell_id"].map(sizes)
        rows = rows.dropna(subset=["size", "value"])
        if rows["size"].nunique() < 2 or len(rows) < 4 or rows["value"].nunique() < 2:
            evidence.append(f"{label}: too few cells or no variation ({metric} on {len(rows)} cells)")
            verdicts.append(UNDECIDED)
            continue
        rho, p = spearmanr(rows["size"], rows["value"])
        evidence.append(f"{label}: Spearman rho(size, {metric}) = {rho:+.2f}, p={p:.3g}, {len(rows)} cells")
        verdicts.append(UNDECIDED if p >= 0.05 or np.isnan(rho) else SUPPORTED if rho * sign > 0 else CONTRADICTED)
    return _claim("Larger models are less robust (ReCode) and less secure", "Astraios", verdicts, evidence, "")


def loss_predicts(data: StudyData) -> dict:
    from scipy.stats import pearsonr

    def undecided(why: str) -> dict:
        return _claim("Test loss predicts downstream scores", "Astraios", [], [], why)

    frame = losses(data)
    if not len(frame):
        return undecided("no trained cells")
    joined = data.runs.merge(mean_downstream(data), on="cell_id")[["final_eval_loss", "downstream"]].dropna()
    with_loss = int(data.runs["final_eval_loss"].notna().sum())
    if with_loss >= 4 and len(joined) < 4:
        return undecided(
            f"{with_loss} trained cells have a validation loss, but no downstream score varies between methods "
            "(a normalised score needs a spread)"
        )
    if len(joined) < 4:
        return undecided(f"{len(joined)} trained cells with a validation loss and downstream scores; 4 or more needed")
    if joined.nunique().min() < 2:
        return undecided("the validation loss or the downstream score is the same for every trained cell")
    res = pearsonr(joined["final_eval_loss"].astype(float), joined["downstream"].astype(float))
    low, high = res.confidence_interval(0.95)
    verdict = SUPPORTED if high < 0 else CONTRADICTED if low > 0 else UNDECIDED
    evidence = [
        f"Pearson r(validation loss, mean normalised downstream score) = {res.statistic:+.2f} [{low:+.2f}, {high:+.2f}]"
        f" over {len(joined)} trained cells (lower loss, higher score: r < 0)"
    ]
    return _claim("Test loss predicts downstream scores", "Astraios", [verdict], evidence, "")


def _margin(metric: str, reference: float) -> float:
    if metric.startswith(("pass@", "em@", "robust_pass@")) or metric in ("accuracy", "macro_f1", "insecure_rate"):
        return 0.05
    if metric in ("chrf", "bleu"):
        return 5.0
    return 0.05 * abs(reference) if np.isfinite(reference) else np.inf


def _matches(rows: list[dict]) -> tuple[str, list[str]]:
    """Verdict of 'A matches B' from paired results on several tasks."""
    if not rows:
        return UNDECIDED, []
    evidence = [
        f"{r['task']}: {r['metric']} {r['difference']:+.3g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}], "
        f"p={r['p']:.3g}, {r['problems']} problems" for r in rows
    ]  # fmt: skip
    if any(r["p_holm"] < 0.05 for r in rows):
        return CONTRADICTED, evidence
    inside = all(max(abs(r["ci_low"]), abs(r["ci_high"])) <= _margin(r["metric"], r["b_score"]) for r in rows)
    return (SUPPORTED if inside else UNDECIDED), evidence


def qlora_matches_lora(data: StudyData, comps: pd.DataFrame) -> dict:
    method = dict(zip(data.cells["method_label"], data.cells["method"], strict=True))
    rows = comps[~comps["task"].str.endswith("-loss")]
    pair = rows["a"].map(method).fillna("") + "/" + rows["b"].map(method).fillna("")
    rows = rows[pair.isin(["lora/qlora", "qlora/lora"])]
    verdict, evidence = _matches(rows.to_dict("records"))
    return _claim("QLoRA matches LoRA", "Weyssow et al.", [verdict] if len(rows) else [], evidence,
                  "no LoRA and QLoRA cells on the same tasks")  # fmt: skip


def joint_matches_separate(data: StudyData, joint: set[str]) -> dict:
    """Each trained method's joint-training cell against its per-dataset cells, task by task."""
    rows = []
    cells = data.cells[data.cells["kind"] == "tuning"]
    for (model, label), group in cells.groupby(["model", "method_label"]):
        joints = [d for d in group["dataset"].unique() if d in joint]
        separate = [d for d in group["dataset"].unique() if d not in joint]
        for j in joints:
            for s in separate:
                pair_cells = group[group["dataset"].isin([j, s])]
                for task in sorted(set(data.metrics[data.metrics["cell_id"].isin(pair_cells["cell_id"])]["task"])):
                    metric = primary_metric(data.metrics, task)
                    if task.endswith("-loss") or metric is None:
                        continue
                    a = per_method(data, group[group["dataset"] == j], task, metric).get(label)
                    b = per_method(data, group[group["dataset"] == s], task, metric).get(label)
                    if a is None or b is None:
                        continue
                    result = compare_pair(a, b, metric)
                    if result:
                        rows.append({"task": f"{model} {label} {task} ({j} vs {s})", "metric": metric, **result})
    from codepeft.stats import holm

    for r, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = adjusted
    verdict, evidence = _matches(rows)
    return _claim("Joint training matches per-dataset adapters", "Weyssow et al.", [verdict] if rows else [],
                  evidence, "no joint training set beside per-dataset training of the same method")  # fmt: skip


def _claim(claim: str, source: str, verdicts: list[str], evidence: list[str], missing: str) -> dict:
    if not verdicts:
        return {"claim": claim, "source": source, "verdict": UNDECIDED, "evidence": [missing or "not testable"]}
    if CONTRADICTED in verdicts:
        verdict = CONTRADICTED
    elif all(v == SUPPORTED for v in verdicts):
        verdict = SUPPORTED
    else:
        verdict = UNDECIDED
    return {"claim": claim, "source": source, "verdict": verdict, "evidence": evidence}


def claims(data: StudyData, comps: pd.DataFrame, joint: set[str]) -> list[dict]:
    return [
        fft_best(data, comps),
        lora_tradeoff(data, comps),
        peft_beats_prompting(data, comps),
        larger_less_robust(data),
        loss_predicts(data),
        qlora_matches_lora(data, comps),
        joint_matches_separate(data, joint),
    ]
