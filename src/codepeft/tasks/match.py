"""Text-match tasks (CoNaLa / CodeAlpaca-Py style): exact match @k, BLEU and chrF (`sacrebleu`),
CodeBLEU (`codebleu`)."""

from __future__ import annotations

from dataclasses import replace

from codepeft.config import DatasetSpec
from codepeft.data import load_examples
from codepeft.data.formats import query_text, render
from codepeft.stats import wilson
from codepeft.tasks.base import FENCE, Task, TaskKind


def strip_fence(code: str) -> str:
    match = FENCE.search(code)
    return match.group(2) if match else code


def normalize_code(code: str) -> str:
    return " ".join(strip_fence(code).split())


def codebleu(predictions: list[str], references: list[str], language: str = "python") -> dict[str, float]:
    """CodeBLEU (Ren et al. 2020) from the `codebleu` package: n-gram, weighted n-gram, syntax
    (tree-sitter) and data-flow match, equally weighted. Code keeps its layout (indentation is syntax)."""
    from codebleu import calc_codebleu

    return calc_codebleu(references, predictions, lang=language)


class MatchTask(Task):
    def __init__(self, dataset: str, split: str = "test", data_files: str | None = None):
        super().__init__(
            name=dataset,
            description=f"generate the reference code of {dataset}; exact match@k, BLEU, chrF, CodeBLEU",
            metrics=("em@k", "bleu", "chrf", "codebleu"),
            source=f"{dataset} [{split}]",
            kind=TaskKind.MATCH,
            stop=["\n\n\n", "\n###", "\nQuestion:"],
        )
        self.dataset, self.split, self.data_files = dataset, split, data_files

    def problems(self):
        spec = DatasetSpec(source=self.dataset, split=self.split, data_files=self.data_files)
        return [{"task_id": f"{self.dataset}/{i}", **ex} for i, ex in enumerate(load_examples(spec, self.split))]

    def text_prompt(self, problem, fmt, tokenizer=None) -> str:
        prompt, _ = render(fmt, {**problem, "output": ""}, tokenizer)
        return prompt

    def render(self, problems, ctx):
        # laid out exactly as the training examples were (data.formats), not as a code prompt
        from codepeft.baselines import TaskPrompt

        tests = [TaskPrompt(self.text_prompt(p, ctx.fmt, ctx.tokenizer), query_text(p), "") for p in problems]
        return ctx.prompter.render(tests, [query_text(p) for p in problems])

    def run(self, problems, ctx):
        """Answers are cut at twice the longest reference of the problems, in tokens (at least 32):
        one longer cannot match, and a model that writes a whole program where one line is
        asked for would spend minutes a problem. The cap is recorded with the result."""
        longest = max((len(ctx.tokenizer(p["output"])["input_ids"]) for p in problems), default=0)
        cap = min(ctx.settings.max_new_tokens, max(32, 2 * longest))
        result = super().run(problems, replace(ctx, settings=replace(ctx.settings, max_new_tokens=cap)))
        result["max_new_tokens"] = cap
        return result

    def score(self, problems, completions, ks, pool=None):
        return score_match(problems, completions, ks)


def score_match(problems: list[dict], completions: list[list[str]], ks: list[int]) -> dict:
    import sacrebleu

    refs = [normalize_code(p["output"]) for p in problems]
    firsts = [normalize_code(c[0]) if c else "" for c in completions]
    records, scores = [], {}
    for k in ks:
        if any(k > len(c) for c in completions):
            continue
        hits = [float(any(normalize_code(s) == r for s in c[:k])) for c, r in zip(completions, refs, strict=True)]
        value, ci = sum(hits) / len(hits), wilson(int(sum(hits)), len(hits))
        scores[f"em@{k}"] = {"value": value, "ci95": ci, "k": k, "problems": len(problems)}
    scores["bleu"] = {"value": sacrebleu.corpus_bleu(firsts, [refs]).score}
    scores["chrf"] = {"value": sacrebleu.corpus_chrf(firsts, [refs]).score}
    parts = codebleu([strip_fence(c[0]) if c else "" for c in completions], [p["output"] for p in problems])
    scores["codebleu"] = {"value": parts.pop("codebleu"), "components": parts}
    for p, c in zip(problems, completions, strict=True):
        records.append({"task_id": p["task_id"], "reference": p["output"], "samples": [{"completion": s} for s in c]})
    return {"scores": scores, "problems": records}
