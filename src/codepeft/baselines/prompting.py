"""Few-shot prompt assembly: examples laid out in the task's prompt format (or as chat turns)
before the test prompt, dropping the least relevant examples until the prompt fits the
model's context. The test prompt itself is never cut."""

from __future__ import annotations

from dataclasses import dataclass

from codepeft.data.formats import chat_answer, query_text, render

SEPARATOR = "\n\n"


@dataclass
class TaskPrompt:
    """The test prompt as the zero-shot flow renders it, plus its halves for chat layouts."""

    text: str
    instruction: str
    answer_prefix: str


def shot_text(example: dict, fmt: str, tokenizer=None) -> str:
    prompt, response = render(fmt, example, tokenizer)
    return prompt + response


def _layout(test: TaskPrompt, shots: list[dict], fmt: str, tokenizer) -> str:
    # shots come most relevant first; the most relevant one is placed next to the test prompt
    ordered = list(reversed(shots))
    if fmt == "chat":
        turns = []
        for ex in ordered:
            turns += [{"role": "user", "content": query_text(ex)}, {"role": "assistant", "content": chat_answer(ex)}]
        turns.append({"role": "user", "content": test.instruction})
        head = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return head + test.answer_prefix
    return "".join(shot_text(ex, fmt, tokenizer).rstrip("\n") + SEPARATOR for ex in ordered) + test.text


def assemble(test: TaskPrompt, shots: list[dict], fmt: str, tokenizer, budget: int | None) -> tuple[str, int]:
    """(prompt, number of examples kept). Examples are taken in order of relevance while the
    prompt stays within `budget` tokens; one that does not fit is dropped and the next, perhaps
    shorter, one is tried. With no example kept the test prompt goes as it is, never cut."""
    kept: list[dict] = []
    for ex in shots:
        candidate = kept + [ex]
        if budget is None or len(tokenizer(_layout(test, candidate, fmt, tokenizer))["input_ids"]) <= budget:
            kept = candidate
    return (_layout(test, kept, fmt, tokenizer) if kept else test.text), len(kept)
