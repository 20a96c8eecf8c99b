"""Per-problem scores: what paired tests between methods compare, kept in the results store.

`problem_scores(result)` turns one task's evaluation result (`{"scores": ..., "problems": [...]}`)
into rows `{"problem", "metric", "value", "n", "c", "detail"}`, read from the shape of its
per-problem records, so that every task (and every result written before this existed) has them:

  pass      execution tasks: n samples, c of them passed, value c / n
  em, chrf  match tasks: exact match of the first answer (0/1); chrF's character n-gram statistics
            of the first answer (`detail`), from which a corpus chrF of any resample is recomputed
  loss      loss tasks: the example's mean token loss, n its target tokens
  insecure  security tasks: share of the problem's samples judged insecure
  correct   classification tasks: the parsed answer equals the label (0/1)

Records repeated over ICL seeds (they carry `seed`) become one row per problem: the mean value
over seeds, n and c summed, chrF statistics summed (methods are compared on seed means).
"""

from __future__ import annotations

# The per-problem metric that pairs each summary metric of a task (analysis reads this).
PAIRED_METRIC = {
    "pass@": "pass",
    "robust_pass@": "pass",
    "em@": "em",
    "chrf": "chrf",
    "loss": "loss",
    "insecure_rate": "insecure",
    "accuracy": "correct",
    "macro_f1": "correct",
}


def paired_metric(metric: str) -> str | None:
    """The per-problem metric of summary metric `metric` (pass@1 -> pass), None when none pairs it."""
    for prefix, name in PAIRED_METRIC.items():
        if metric == prefix or (prefix.endswith("@") and metric.startswith(prefix)):
            return name
    return None


def problem_scores(result: dict) -> list[dict]:
    records = result.get("problems") or []
    seeds = sorted({r["seed"] for r in records if "seed" in r})
    if len(seeds) < 2:
        return _rows(records)
    return _seed_means([_rows([r for r in records if r.get("seed") == s]) for s in seeds])


def _seed_means(per_seed: list[list[dict]]) -> list[dict]:
    merged: dict[tuple[str, str], list[dict]] = {}
    for rows in per_seed:
        for r in rows:
            merged.setdefault((r["problem"], r["metric"]), []).append(r)
    out = []
    for (problem, metric), rs in merged.items():
        values = [r["value"] for r in rs if r["value"] is not None]
        detail = None
        if rs[0]["detail"] is not None:
            detail = [sum(col) for col in zip(*(r["detail"] for r in rs), strict=True)]
        value = (
            corpus_chrf([detail]) if metric == "chrf" and detail else (sum(values) / len(values) if values else None)
        )
        out.append(_row(problem, metric, value, n=_sum(rs, "n"), c=_sum(rs, "c"), detail=detail))
    return out


def _sum(rows: list[dict], key: str):
    return None if any(r[key] is None for r in rows) else sum(r[key] for r in rows)


def _rows(records: list[dict]) -> list[dict]:
    rows: list[dict] = []
    match = [r for r in records if "reference" in r and "samples" in r and "n" not in r]
    if match:
        rows += _match_rows(match)
    for r in records:
        key = _key(r)
        if "n" in r and "passed" in r:
            rows.append(_row(key, "pass", r["passed"] / r["n"] if r["n"] else None, n=r["n"], c=r["passed"]))
        elif "loss" in r:
            rows.append(_row(key, "loss", r["loss"], n=r.get("tokens")))
        elif "label" in r and "parsed" in r:
            rows.append(_row(key, "correct", float(r["parsed"] == r["label"]), n=1, c=int(r["parsed"] == r["label"])))
        elif r.get("samples") and all("insecure" in s for s in r["samples"]):
            flags = [bool(s["insecure"]) for s in r["samples"]]
            rows.append(_row(key, "insecure", sum(flags) / len(flags), n=len(flags), c=sum(flags)))
    return rows


def _key(record: dict) -> str:
    """The problem's id; ReCode's perturbed variants also name their perturbation and variant."""
    key = str(record.get("task_id"))
    if "perturbation" in record:
        key += f"|{record['perturbation']}|{record.get('variant', 0)}"
    return key


def _row(problem: str, metric: str, value, n=None, c=None, detail=None) -> dict:
    return {"problem": problem, "metric": metric, "value": value, "n": n, "c": c, "detail": detail}


def _match_rows(records: list[dict]) -> list[dict]:
    from sacrebleu.metrics import CHRF

    from codepeft.tasks.match import normalize_code

    refs = [normalize_code(r["reference"]) for r in records]
    firsts = [normalize_code(r["samples"][0]["completion"]) if r["samples"] else "" for r in records]
    stats = CHRF()._extract_corpus_statistics(firsts, [refs])  # sacrebleu's own paired-test statistics
    rows = []
    for r, ref, first, st in zip(records, refs, firsts, stats, strict=True):
        key = _key(r)
        rows.append(_row(key, "em", float(first == ref), n=1, c=int(first == ref)))
        rows.append(_row(key, "chrf", CHRF()._compute_score_from_stats(list(st)).score, detail=[int(x) for x in st]))
    return rows


def corpus_chrf(stats) -> float:
    """Corpus chrF of the problems whose per-problem statistics are `stats` (rows of `detail`)."""
    import numpy as np
    from sacrebleu.metrics import CHRF

    return float(CHRF()._compute_score_from_stats(list(np.asarray(stats).sum(axis=0))).score)
