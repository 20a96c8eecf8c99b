"""Text-match tasks (CoNaLa / CodeAlpaca-Py style): exact match @k, BLEU and chrF (sacrebleu)."""

from __future__ import annotations

from codepeft.config import DatasetSpec
from codepeft.data import load_examples
from codepeft.data.formats import render
from codepeft.metrics import mean_ci
from codepeft.tasks.base import FENCE, Task


def normalize_code(code: str) -> str:
    match = FENCE.search(code)
    if match:
        code = match.group(2)
    return " ".join(code.split())


class MatchTask(Task):
    def __init__(self, dataset: str, split: str = "test", data_files: str | None = None):
        super().__init__(
            name=dataset,
            description=f"generate the reference code of {dataset}; exact match@k, BLEU, chrF",
            metrics=("em@k", "bleu", "chrf"),
            source=f"{dataset} [{split}]",
            kind="match",
            stop=["\n\n\n", "\n###", "\nQuestion:"],
        )
        self.dataset, self.split, self.data_files = dataset, split, data_files

    def problems(self):
        spec = DatasetSpec(source=self.dataset, split=self.split, data_files=self.data_files)
        return [{"task_id": f"{self.dataset}/{i}", **ex} for i, ex in enumerate(load_examples(spec, self.split))]

    def text_prompt(self, problem, fmt, tokenizer=None) -> str:
        prompt, _ = render(fmt, {**problem, "output": ""}, tokenizer)
        return prompt


def score_match(problems: list[dict], completions: list[list[str]], ks: list[int]) -> dict:
    import sacrebleu

    refs = [normalize_code(p["output"]) for p in problems]
    firsts = [normalize_code(c[0]) if c else "" for c in completions]
    records, scores = [], {}
    for k in ks:
        if any(k > len(c) for c in completions):
            continue
        hits = [float(any(normalize_code(s) == r for s in c[:k])) for c, r in zip(completions, refs, strict=True)]
        value, ci = mean_ci(hits)
        scores[f"em@{k}"] = {"value": value, "ci95": ci, "k": k, "problems": len(problems)}
    scores["bleu"] = {"value": sacrebleu.corpus_bleu(firsts, [refs]).score}
    scores["chrf"] = {"value": sacrebleu.corpus_chrf(firsts, [refs]).score}
    for p, c in zip(problems, completions, strict=True):
        records.append({"task_id": p["task_id"], "reference": p["output"], "samples": [{"completion": s} for s in c]})
    return {"scores": scores, "problems": records}
