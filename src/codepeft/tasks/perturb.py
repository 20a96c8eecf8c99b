"""ReCode-style perturbations of HumanEval problems, in four categories.

Every perturbation maps a problem ({prompt, canonical_solution, test, entry_point}) and a
random generator to a perturbed problem whose canonical solution still passes (the tests check
this on all 164 problems), or to None where it does not apply. Syntax and format perturbations
work on *partial code*: the prompt plus the first half of the canonical body's statements;
the remaining statements are the reference continuation.
"""

from __future__ import annotations

import ast
import io
import random
import re
import textwrap
import tokenize
from collections.abc import Callable

Problem = dict
KEYBOARD = {c: n for c, n in zip("qwertyuiopasdfghjklzxcvbnm", "wqeryuioppsdfghjkllxcvbnmn", strict=True)}
SYNONYMS = {
    "return": "give back",
    "returns": "gives back",
    "list": "sequence",
    "number": "value",
    "numbers": "values",
    "given": "provided",
    "string": "text",
    "check": "verify",
    "find": "locate",
    "largest": "biggest",
    "smallest": "tiniest",
    "function": "routine",
    "integer": "whole number",
    "integers": "whole numbers",
    "empty": "blank",
    "each": "every",
    "first": "initial",
    "input": "argument",
    "output": "result",
    "count": "tally",
    "sum": "total",
    "sorted": "ordered",
    "write": "create",
    "determine": "decide",
}
NAME_SYNONYMS = {
    "get": "fetch",
    "find": "locate",
    "count": "tally",
    "sum": "total",
    "check": "verify",
    "is": "test_is",
    "max": "largest",
    "min": "smallest",
    "sort": "order",
    "make": "build",
}


# --- helpers --------------------------------------------------------------------------------------------


def _entry(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def docstring_span(problem: Problem) -> tuple[int, int] | None:
    """Character span of the entry point's docstring *text* in the prompt."""
    tree = ast.parse(problem["prompt"])
    fn = _entry(tree, problem["entry_point"])
    first = fn.body[0] if fn.body else None
    if not (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    ):
        return None
    lines = problem["prompt"].splitlines(keepends=True)
    start = sum(len(line) for line in lines[: first.lineno - 1]) + first.col_offset
    end = sum(len(line) for line in lines[: first.end_lineno - 1]) + first.end_col_offset
    return start + 3, end - 3  # inside the triple quotes


def _perturb_words(problem: Problem, rng: random.Random, change: Callable[[str, random.Random], str]) -> Problem | None:
    span = docstring_span(problem)
    if span is None:
        return None
    start, end = span
    doc = problem["prompt"][start:end]
    out = []
    for line in doc.splitlines(keepends=True):
        stripped = line.strip()
        # examples (>>> lines and the outputs after them) stay exact: they are specifications
        if stripped.startswith(">>>") or (out and out[-1].strip().startswith(">>>")) or not stripped:
            out.append(line)
            continue
        out.append(re.sub(r"[A-Za-z]{3,}", lambda m: change(m.group(0), rng), line))
    new_doc = "".join(out)
    if new_doc == doc:
        return None
    return {**problem, "prompt": problem["prompt"][:start] + new_doc + problem["prompt"][end:]}


def _with_name(problem: Problem, new: str) -> Problem | None:
    old = problem["entry_point"]
    if new == old or not new.isidentifier():
        return None
    pattern = re.compile(rf"\b{re.escape(old)}\b")
    # the tests may call the function by name too (not only as `candidate`)
    return {
        **problem,
        "prompt": pattern.sub(new, problem["prompt"]),
        "test": pattern.sub(new, problem["test"]),
        "canonical_solution": pattern.sub(new, problem["canonical_solution"]),
        "entry_point": new,
    }


# --- docstring ------------------------------------------------------------------------------------------


def butter_fingers(problem, rng, prob=0.05):
    def change(word, rng):
        return "".join(KEYBOARD.get(c, c) if c.islower() and rng.random() < prob else c for c in word)

    return _perturb_words(problem, rng, change)


def char_case(problem, rng, prob=0.35):
    return _perturb_words(problem, rng, lambda w, r: "".join(c.swapcase() if r.random() < prob else c for c in w))


def swap_characters(problem, rng, prob=0.05):
    def change(word, rng):
        chars = list(word)
        for i in range(len(chars) - 1):
            if rng.random() < prob:
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
        return "".join(chars)

    return _perturb_words(problem, rng, change)


def synonym_substitution(problem, rng, prob=0.5):
    def change(word, rng):
        synonym = SYNONYMS.get(word.lower())
        return synonym if synonym and rng.random() < prob else word

    return _perturb_words(problem, rng, change)


def whitespace(problem, rng, prob=0.1):
    return _perturb_words(problem, rng, lambda w, r: w + (" " if r.random() < prob else ""))


# --- function name ---------------------------------------------------------------------------------------


def camel_case(problem, rng):
    parts = problem["entry_point"].split("_")
    return _with_name(problem, parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:]))


def name_butter_finger(problem, rng):
    name = problem["entry_point"]
    positions = [i for i, c in enumerate(name) if c in KEYBOARD]
    if not positions:
        return None
    i = rng.choice(positions)
    return _with_name(problem, name[:i] + KEYBOARD[name[i]] + name[i + 1 :])


def name_swap_char(problem, rng):
    name = problem["entry_point"]
    if len(name) < 3:
        return None
    i = rng.randrange(len(name) - 1)
    return _with_name(problem, name[:i] + name[i + 1] + name[i] + name[i + 2 :])


def name_synonym(problem, rng):
    parts = problem["entry_point"].split("_")
    choices = [i for i, p in enumerate(parts) if p in NAME_SYNONYMS]
    if not choices:
        return None
    i = rng.choice(choices)
    parts[i] = NAME_SYNONYMS[parts[i]]
    return _with_name(problem, "_".join(parts))


# --- partial code -----------------------------------------------------------------------------------------


def partial_code(problem: Problem) -> Problem | None:
    """The ReCode partial-code problem: prompt + first half of the body's statements; the rest is
    the reference continuation. Printed with ast.unparse so perturbed and nominal look alike."""
    full = problem["prompt"] + problem["canonical_solution"]
    tree = ast.parse(full)
    fn = _entry(tree, problem["entry_point"])
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    if len(body) < 2:
        return None
    cut = len(body) // 2
    head_fn_body = fn.body[: len(fn.body) - len(body) + cut]
    rest_stmts = body[cut:]
    fn.body = head_fn_body
    partial = ast.unparse(tree) + "\n"
    fn.body = rest_stmts
    rest = "\n".join("    " + line for line in "\n".join(ast.unparse(s) for s in rest_stmts).splitlines()) + "\n"
    return {**problem, "prompt": partial, "canonical_solution": rest, "partial": True}


def _transform_partial(
    problem: Problem, transform: Callable[[ast.FunctionDef, random.Random], bool], rng: random.Random
) -> Problem | None:
    tree = ast.parse(problem["prompt"])
    fn = _entry(tree, problem["entry_point"])
    if not transform(fn, rng):
        return None
    return {**problem, "prompt": ast.unparse(ast.fix_missing_locations(tree)) + "\n"}


def dead_code_insertion(problem, rng):
    def insert(fn, rng):
        start = 1 if ast.get_docstring(fn) is not None else 0
        var = f"_unused_{rng.randrange(1000)}"
        dead = ast.parse(
            rng.choice(
                [f"if False:\n    {var} = 0", f"while False:\n    {var} = 1", f"for {var} in range(0):\n    pass"]
            )
        ).body[0]
        fn.body.insert(rng.randint(start, len(fn.body)), dead)
        return True

    return _transform_partial(problem, insert, rng)


_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}


def operand_swap(problem, rng):
    def swap(fn, rng):
        sites = [n for n in ast.walk(fn) if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _FLIP]
        if not sites:
            return False
        node = rng.choice(sites)
        node.left, node.comparators[0] = node.comparators[0], node.left
        node.ops[0] = _FLIP[type(node.ops[0])]()
        return True

    return _transform_partial(problem, swap, rng)


def loops_to_while(fn: ast.AST, rng: random.Random) -> bool:
    """Rewrite the first `for` loop (no else, break or continue) in `fn` as an equivalent `while`."""
    for parent in ast.walk(fn):
        for field in ("body", "orelse"):
            stmts = getattr(parent, field, None)
            if not isinstance(stmts, list):
                continue
            for i, s in enumerate(stmts):
                if isinstance(s, ast.For) and not s.orelse and not _has_break_continue(s):
                    it = f"_iter_{rng.randrange(1000)}"
                    loop = ast.parse(
                        f"{it} = iter(None)\nwhile True:\n    try:\n        _x = next({it})\n"
                        "    except StopIteration:\n        break\n"
                    ).body
                    loop[0].value.args[0] = s.iter
                    loop[1].body[0].body[0].targets[0] = s.target
                    loop[1].body.extend(s.body)
                    stmts[i : i + 1] = loop
                    return True
    return False


def for_to_while(problem, rng):
    return _transform_partial(problem, loops_to_while, rng)


def _has_break_continue(loop: ast.For) -> bool:
    return any(isinstance(n, ast.Break | ast.Continue) for s in loop.body for n in ast.walk(s))


def variable_renaming(problem, rng):
    tree = ast.parse(problem["prompt"])
    fn = _entry(tree, problem["entry_point"])
    local = sorted({n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)})
    if not local:
        return None
    old = rng.choice(local)
    new = f"var_{rng.randrange(1000)}"
    rest = ast.parse(textwrap.dedent(problem["canonical_solution"]))
    for node in [*ast.walk(fn), *ast.walk(rest)]:
        if isinstance(node, ast.Name) and node.id == old:
            node.id = new
        elif isinstance(node, ast.arg) and node.arg == old:  # a parameter that is also reassigned
            node.arg = new
    rest_text = textwrap.indent(ast.unparse(rest), "    ") + "\n"
    return {**problem, "prompt": ast.unparse(tree) + "\n", "canonical_solution": rest_text}


# --- format -----------------------------------------------------------------------------------------------


def tab_indent(problem, rng):
    def tabs(text):
        return re.sub(r"^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), text, flags=re.M)

    return {**problem, "prompt": tabs(problem["prompt"]), "canonical_solution": tabs(problem["canonical_solution"])}


def docstring_to_comments(problem, rng):
    tree = ast.parse(problem["prompt"])
    fn = _entry(tree, problem["entry_point"])
    doc = ast.get_docstring(fn)
    if doc is None:
        return None
    fn.body = fn.body[1:]
    lines = ast.unparse(tree).splitlines()
    def_line = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"def {problem['entry_point']}("))
    comment = ["    # " + line if line.strip() else "    #" for line in doc.splitlines()]
    lines[def_line + 1 : def_line + 1] = comment
    return {**problem, "prompt": "\n".join(lines) + "\n"}


def random_new_lines(problem, rng, prob=0.3):
    lines = problem["prompt"].splitlines(keepends=True)
    out = []
    for line in lines:
        out.append(line)
        if rng.random() < prob and line.strip():
            out.append("\n")
    if len(out) == len(lines):
        return None  # this seed inserted nothing: not a variant
    return {**problem, "prompt": "".join(out)}


def split_long_line(problem, rng):
    """Break the longest code line of the partial code at a token boundary with a backslash."""
    text = problem["prompt"]
    lines = text.splitlines(keepends=True)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    by_line: dict[int, list] = {}
    for tok in tokens:
        if tok.type not in skip and tok.start[0] == tok.end[0]:
            by_line.setdefault(tok.start[0], []).append(tok)
    multiline_strings = {
        n
        for tok in tokens
        if tok.type == tokenize.STRING
        for n in range(tok.start[0], tok.end[0] + 1)
        if tok.start[0] != tok.end[0]
    }
    candidates = [
        (len(lines[n - 1]), n) for n, toks in by_line.items() if len(toks) >= 4 and n not in multiline_strings
    ]
    if not candidates:
        return None
    _, line_no = max(candidates)
    toks = by_line[line_no]
    col = toks[rng.randrange(1, len(toks))].start[1]  # between two tokens, never inside one
    line = lines[line_no - 1]
    indent = line[: len(line) - len(line.lstrip())]
    lines[line_no - 1] = line[:col].rstrip() + " \\\n" + indent + "    " + line[col:]
    return {**problem, "prompt": "".join(lines)}


def new_line_after_code(problem, rng):
    return {**problem, "prompt": problem["prompt"] + "\n"}


def new_line_after_docstring(problem, rng):
    tree = ast.parse(problem["prompt"])
    fn = _entry(tree, problem["entry_point"])
    if ast.get_docstring(fn) is None:
        return None
    lines = problem["prompt"].splitlines(keepends=True)
    end = fn.body[0].end_lineno
    return {**problem, "prompt": "".join(lines[:end]) + "\n" + "".join(lines[end:])}


# name -> (function, randomized?)
PERTURBATIONS: dict[str, dict[str, tuple[Callable, bool]]] = {
    "docstring": {
        "butter_fingers": (butter_fingers, True),
        "char_case": (char_case, True),
        "swap_characters": (swap_characters, True),
        "synonym_substitution": (synonym_substitution, True),
        "whitespace": (whitespace, True),
    },
    "function": {
        "camel_case": (camel_case, False),
        "butter_finger": (name_butter_finger, True),
        "swap_char": (name_swap_char, True),
        "synonym": (name_synonym, False),
    },
    "syntax": {
        "dead_code_insertion": (dead_code_insertion, True),
        "for_while": (for_to_while, False),
        "operand_swap": (operand_swap, True),
        "variable_renaming": (variable_renaming, True),
    },
    "format": {
        "tab_indent": (tab_indent, False),
        "split_long_line": (split_long_line, True),
        "docstring_to_comments": (docstring_to_comments, False),
        "random_new_lines": (random_new_lines, True),
        "new_line_after_code": (new_line_after_code, False),
        "new_line_after_docstring": (new_line_after_docstring, False),
    },
}
PARTIAL_CATEGORIES = ("syntax", "format")


def variants(problem: Problem, category: str, seeds: int) -> tuple[Problem | None, dict[str, list[Problem]]]:
    """(nominal problem, {perturbation: its variants}) for one problem and category."""
    nominal = partial_code(problem) if category in PARTIAL_CATEGORIES else problem
    out: dict[str, list[Problem]] = {}
    if nominal is None:
        return None, out
    for name, (fn, randomized) in PERTURBATIONS[category].items():
        got = []
        for seed in range(seeds if randomized else 1):
            perturbed = fn(nominal, random.Random(f"{problem['task_id']}/{name}/{seed}"))
            if perturbed is not None:
                got.append(perturbed)
        if got:
            out[name] = got
    return nominal, out
