"""What every task is: problems, prompts, post-processing and scoring.

A task is one small class registered in `codepeft.tasks.registry`. Execution tasks turn each
completion into a program that the sandbox runs with the problem's tests; match tasks compare
text with references; loss tasks measure held-out cross-entropy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from codepeft.errors import CodepeftError

# Stop sequences of the BigCode evaluation harness for Python completion.
PYTHON_STOP = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert"]
FENCE = re.compile(r"```[ \t]*([\w+#-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


@dataclass
class Prompt:
    """An instruction with the code the answer starts from (the two halves of a template)."""

    instruction: str
    answer_prefix: str  # code the model continues; re-joined with its completion
    plain: str | None = None  # the completion-style prompt for base models (default: answer_prefix)


def render_prompt(p: Prompt, fmt: str, tokenizer=None) -> str:
    """Lay a prompt out in one of the training formats, so a tuned model sees what it learned."""
    if fmt == "plain":
        return p.plain if p.plain is not None else p.answer_prefix
    if fmt == "octocoder":
        return f"Question: {p.instruction}\n\nAnswer:\n{p.answer_prefix}"
    if fmt == "alpaca":
        return f"### Instruction:\n{p.instruction}\n### Response:\n{p.answer_prefix}"
    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise CodepeftError("prompt format 'chat' needs a tokenizer with a chat template")
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": p.instruction}], tokenize=False, add_generation_prompt=True
        )
        return head + p.answer_prefix
    raise CodepeftError(f"unknown prompt format {fmt!r}; use plain, octocoder, alpaca or chat")


def extract_code(completion: str, answer_prefix: str, entry_point: str | None = None) -> str:
    """Re-join a completion with its prefix; a fenced answer (chat models) is taken from the fence,
    and used alone when it defines the entry point itself."""
    match = FENCE.search(completion)
    if match is None:
        return answer_prefix + completion
    code = match.group(2)
    if entry_point and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return code
    return answer_prefix + code


@dataclass
class Task:
    name: str
    description: str
    metrics: tuple[str, ...]
    source: str
    kind: str = "execution"  # execution | match | loss
    language: str = "python"
    stop: list[str] = field(default_factory=lambda: list(PYTHON_STOP))

    def problems(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def prompt(self, problem: dict) -> Prompt:
        raise NotImplementedError

    def program(self, problem: dict, completion: str) -> str:
        """The full program that runs the problem's tests on a completion."""
        raise NotImplementedError

    def entry_point(self, problem: dict) -> str | None:
        return problem.get("entry_point")
