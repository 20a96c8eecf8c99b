"""ReCode robustness: pass@k on perturbed prompts, worst case over s seeded variants.

`recode-{category}` reads ReCode's released perturbed HumanEval (shipped: seeds 0-4 of each
randomized transform, one file for a deterministic one; nominal = the unperturbed HumanEval, or
its partial code for syntax and format). `recode-generated-{category}` and
`recode-mbpp-{category}` apply codepeft's own implementation of the transforms
(`codepeft.tasks.perturb`) to HumanEval and to MBPP's test split, which ReCode's shipped release
does not cover.

Per perturbation: Robust Pass_s@k (a sample counts only if it passes on every variant),
Robust Drop_s@k = (nominal pass@k - RP) / nominal pass@k, and Robust Relative_s@k (problems
whose outcome flips either way between the nominal prompt and any variant; with sampling the
pass@k estimator applied to both flip counts, added). Per category: the mean over its
perturbations. Syntax and format perturbations use partial code, whose nominal is the
unperturbed partial code.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace

from codepeft.data.shipped import read_shipped, shipped_root
from codepeft.errors import CodepeftError
from codepeft.metrics import pass_at_k
from codepeft.tasks.base import Prompt, Task, TaskKind, generate
from codepeft.tasks.humaneval import humaneval_problems, split_prompt
from codepeft.tasks.mbpp import mbpp_test_problems
from codepeft.tasks.perturb import PERTURBATIONS, variants
from codepeft.tasks.scoring import score_execution

# ReCode's release: category -> (folder of its perturbed files, nominal file)
RELEASE = {
    "docstring": ("nlaugmenter", "HumanEval.jsonl.gz"),
    "function": ("func_name", "HumanEval.jsonl.gz"),
    "syntax": ("natgen", "humaneval_partial.jsonl.gz"),
    "format": ("format", "humaneval_partial.jsonl.gz"),
}
_RELEASED_FILE = re.compile(r"humaneval_(\w+?)_s(\d+)\.jsonl\.gz")


def _restored_quotes(problem: dict) -> dict:
    """The released synonym and back-translation transforms split some docstrings' closing quotes
    into `" " "` (a tokenizer's doing, not a perturbation): the prompt then does not parse and no
    completion can pass. The quotes are put back; nothing else changes."""
    if '" " "' not in problem["prompt"]:
        return problem
    return {**problem, "prompt": problem["prompt"].replace('" " "', '"""')}


@functools.cache
def released_variants(category: str) -> dict[str, tuple[dict, dict[str, list[dict]]]]:
    """task_id -> (nominal problem, {transform: [variant of seed 0, 1, ...]}) from ReCode's files."""
    folder, nominal_file = RELEASE[category]
    partial = category in ("syntax", "format")
    out = {}
    for rec in read_shipped(f"recode/nominal/{nominal_file}"):
        out[rec["task_id"]] = ({**rec, "partial": partial}, {})
    files = sorted(
        (m.group(1), int(m.group(2)), path.name)
        for path in (shipped_root() / "recode" / "humaneval" / folder).iterdir()
        if (m := _RELEASED_FILE.fullmatch(path.name))
    )
    for transform, _seed, name in files:
        for rec in map(_restored_quotes, read_shipped(f"recode/humaneval/{folder}/{name}")):
            if rec["task_id"] not in out:
                raise CodepeftError(f"recode/humaneval/{folder}/{name}: {rec['task_id']} is not in the nominal set")
            out[rec["task_id"]][1].setdefault(transform, []).append({**rec, "partial": partial})
    return out


def robust_metrics(nominal: list[list[bool]], perturbed: list[list[list[bool]]], k: int) -> dict:
    """nominal[problem][sample] and perturbed[problem][variant][sample] pass flags (samples aligned)."""
    rp, nom, rr = [], [], []
    for base, vs in zip(nominal, perturbed, strict=True):
        n = len(base)
        all_pass = [all(v[j] for v in vs) and base[j] if vs else base[j] for j in range(n)]
        to_fail = sum(base[j] and any(not v[j] for v in vs) for j in range(n))
        to_pass = sum(not base[j] and any(v[j] for v in vs) for j in range(n))
        rp.append(pass_at_k(n, sum(all_pass), k))
        nom.append(pass_at_k(n, sum(base), k))
        rr.append(min(1.0, pass_at_k(n, to_fail, k) + pass_at_k(n, to_pass, k)))
    nominal_k = sum(nom) / len(nom) if nom else 0.0
    robust_k = sum(rp) / len(rp) if rp else 0.0
    return {
        f"nominal@{k}": nominal_k,
        f"robust_pass@{k}": robust_k,
        f"robust_drop@{k}": (nominal_k - robust_k) / nominal_k if nominal_k > 0 else None,
        f"robust_relative@{k}": sum(rr) / len(rr) if rr else 0.0,
        "problems": len(nom),
    }


class ReCode(Task):
    """`dataset`: "released" (ReCode's perturbed HumanEval), or "humaneval" / "mbpp" perturbed here."""

    def __init__(self, category: str, dataset: str = "released", seeds: int = 5):
        if category not in RELEASE or dataset not in ("released", "humaneval", "mbpp"):
            raise CodepeftError(f"no ReCode task for {category} perturbations of {dataset}")
        if dataset == "released":
            name, transforms = f"recode-{category}", sorted(released_variants(category)["HumanEval/0"][1])
            source = "ReCode's released perturbed HumanEval (seeds 0-4), shipped"
        else:
            name = f"recode-{'generated' if dataset == 'humaneval' else 'mbpp'}-{category}"
            transforms = list(PERTURBATIONS[category])
            source = f"{'HumanEval' if dataset == 'humaneval' else 'MBPP test split'}, perturbed by codepeft"
        super().__init__(
            name=name,
            description=f"ReCode {category} perturbations ({', '.join(transforms)}); worst case over seeds",
            metrics=("robust_pass@k", "robust_drop@k", "robust_relative@k"),
            source=f"{source}; {seeds} seeded variants per randomized transform",
            kind=TaskKind.ROBUSTNESS,
        )
        self.category, self.dataset, self.seeds = category, dataset, seeds

    def problems(self):
        if self.dataset == "mbpp":
            return mbpp_test_problems()
        return humaneval_problems()

    def variants_of(self, problem: dict) -> tuple[dict | None, dict[str, list[dict]]]:
        """(nominal problem, {transform: its variants, one per seed}); None when none applies."""
        if self.dataset == "released":
            nominal, transforms = released_variants(self.category).get(problem["task_id"], (None, {}))
            return nominal, {name: vs[: self.seeds] for name, vs in transforms.items()}
        return variants(problem, self.category, self.seeds)

    def prompt(self, problem):
        try:
            if problem.get("partial"):
                raise SyntaxError("partial code")
            _, doc, signature = split_prompt(problem)
        except SyntaxError:  # partial code, or a perturbation the parser rejects (ReCode keeps such prompts)
            return Prompt(instruction="Complete the following code.", answer_prefix=problem["prompt"])
        return Prompt(
            instruction=f"Write a Python function `{signature}` to solve the following problem:\n{doc}",
            answer_prefix=problem["prompt"],
        )

    def program(self, problem, completion):
        return f"{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"

    def run(self, problems, ctx):
        """Generate for the nominal prompt and every variant; score each in the sandbox, then
        summarise per perturbation (`summarize`)."""
        items, index = self.expand(problems)
        prompts = ctx.prompter([self.prompt(p) for p in items])
        completions = generate(ctx, prompts, replace(ctx.settings, stop=self.stop))
        result = score_execution(self, items, completions, ctx.ks, ctx.pool)
        passed = [[s["outcome"] == "passed" for s in r["samples"]] for r in result["problems"]]
        for record, (_, name, variant) in zip(result["problems"], index, strict=True):
            record.update(perturbation=name or "nominal", variant=variant)
        result["scores"] = self.summarize(index, passed, ctx.ks)
        return result

    def expand(self, problems: list[dict]) -> tuple[list[dict], list[tuple[int, str | None, int]]]:
        """Every prompt to generate for: (problem index, perturbation or None for nominal, variant)."""
        items, index = [], []
        for i, p in enumerate(problems):
            nominal, vs = self.variants_of(p)
            if nominal is None:
                continue
            items.append(nominal)
            index.append((i, None, 0))
            for name, vlist in vs.items():
                for j, v in enumerate(vlist):
                    items.append(v)
                    index.append((i, name, j))
        return items, index

    def summarize(self, index, passed: list[list[bool]], ks: list[int]) -> dict:
        """Scores per perturbation and for the category (mean over perturbations)."""
        nominal: dict[int, list[bool]] = {}
        per: dict[str, dict[int, list[list[bool]]]] = {}
        for (i, name, _), flags in zip(index, passed, strict=True):
            if name is None:
                nominal[i] = flags
            else:
                per.setdefault(name, {}).setdefault(i, []).append(flags)
        scores: dict[str, dict] = {}
        for k in ks:
            if any(k > len(f) for f in nominal.values()):
                continue
            by_pert = {}
            for name, probs in per.items():
                ids = sorted(probs)
                by_pert[name] = robust_metrics([nominal[i] for i in ids], [probs[i] for i in ids], k)
            for metric in (f"robust_pass@{k}", f"robust_drop@{k}", f"robust_relative@{k}", f"nominal@{k}"):
                values = [m[metric] for m in by_pert.values() if m[metric] is not None]
                scores[metric] = {
                    "value": sum(values) / len(values) if values else None,
                    "k": k,
                    "perturbations": len(values),
                }
            scores[f"per_perturbation@{k}"] = by_pert
        return scores
