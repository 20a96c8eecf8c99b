"""Prompt formats: turn an example into (prompt text, response text)."""

from __future__ import annotations

from collections.abc import Callable

from codepeft.errors import CodepeftError


def query_text(ex: dict) -> str:
    return ex["instruction"] + (f"\n\n{ex['input']}" if ex.get("input") else "")


def octocoder(ex: dict, tokenizer=None) -> tuple[str, str]:
    # Astraios / OctoCoder: "Question: {instruction}\n\nAnswer: {response}"
    return f"Question: {query_text(ex)}\n\nAnswer:\n", ex["output"]


def alpaca(ex: dict, tokenizer=None) -> tuple[str, str]:
    # Weyssow et al.: "### Instruction:\n{nl}\n### Response:\n{code}"
    extra = f"\n### Input:\n{ex['input']}" if ex.get("input") else ""
    return f"### Instruction:\n{ex['instruction']}{extra}\n### Response:\n", ex["output"]


def plain(ex: dict, tokenizer=None) -> tuple[str, str]:
    # Raw continuation: the instruction is code to complete (stdlib-instruct: signature + docstring).
    return query_text(ex), ex["output"]


def chat(ex: dict, tokenizer) -> tuple[str, str]:
    if not getattr(tokenizer, "chat_template", None):
        raise CodepeftError(
            "data.format=chat needs a tokenizer with a chat template; this model has none. "
            "Use data.format=octocoder or alpaca."
        )
    messages = ex.get("messages") or [
        {"role": "user", "content": query_text(ex)},
        {"role": "assistant", "content": ex["output"]},
    ]
    # The loss covers the last assistant turn; earlier turns are context.
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return prompt, messages[-1]["content"]


FORMATS: dict[str, Callable] = {"octocoder": octocoder, "alpaca": alpaca, "plain": plain, "chat": chat}


def render(fmt: str, ex: dict, tokenizer=None) -> tuple[str, str]:
    if "messages" in ex and fmt != "chat":
        # Chat records in a text format: fold the conversation into instruction / output.
        ex = {
            "instruction": "\n\n".join(m["content"] for m in ex["messages"][:-1]),
            "input": "",
            "output": ex["messages"][-1]["content"],
        }
    return FORMATS[fmt](ex, tokenizer)
