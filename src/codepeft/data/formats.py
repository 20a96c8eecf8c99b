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


# names of code languages in prompts; the key is also the code fence's tag
LANGUAGE_NAMES = {
    "python": "Python",
    "java": "Java",
    "javascript": "JavaScript",
    "cpp": "C++",
    "go": "Go",
    "rust": "Rust",
}


def code_answer_start(language: str) -> str:
    """How a chat model's code answer opens: a code block the model writes whole (EvalPlus's
    convention, without its sentence before the block, which talks small models into whole
    programs where one line is asked for). Evaluation pre-fills it; chat training data with code
    answers carries it, so a model tuned on them is evaluated the way it was trained."""
    return f"```{language}\n"


def chat(ex: dict, tokenizer) -> tuple[str, str]:
    """The conversation up to the answer, and the answer. A record whose answer is code (it
    names its `language`, as the code datasets' records do) is answered in a code block opened
    by `code_answer_start`, which goes with the prompt: the loss covers the code and the fence
    that closes it."""
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
    answer = messages[-1]["content"]
    if ex.get("language") and "messages" not in ex:
        return prompt + code_answer_start(ex["language"]), answer.rstrip("\n") + "\n```"
    return prompt, answer


def chat_answer(ex: dict) -> str:
    """The whole assistant turn of an example, as `chat` trains on it (few-shot examples)."""
    if ex.get("language"):
        return code_answer_start(ex["language"]) + ex["output"].rstrip("\n") + "\n```"
    return ex["output"]


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
