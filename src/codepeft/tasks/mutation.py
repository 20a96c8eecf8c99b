"""Bugs made by mutation operators on canonical solutions, kept only if the tests then fail.

Each operator lists the sites where it applies in a function; a seeded generator picks the
operator order and the site, so the bug set is reproducible from the seed.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable

_BINOP_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Add,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_CMP_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


def _sites(fn: ast.FunctionDef, pred: Callable[[ast.AST], bool]) -> list[ast.AST]:
    return [n for n in ast.walk(fn) if pred(n)]


def _operator_swap(fn, rng):
    sites = _sites(fn, lambda n: isinstance(n, ast.BinOp | ast.AugAssign) and type(n.op) in _BINOP_SWAP)
    if not sites:
        return False
    node = rng.choice(sites)
    node.op = _BINOP_SWAP[type(node.op)]()
    return True


def _comparison_swap(fn, rng):
    sites = _sites(fn, lambda n: isinstance(n, ast.Compare) and type(n.ops[0]) in _CMP_SWAP)
    if not sites:
        return False
    node = rng.choice(sites)
    node.ops[0] = _CMP_SWAP[type(node.ops[0])]()
    return True


def _off_by_one(fn, rng):
    sites = _sites(fn, lambda n: isinstance(n, ast.Constant) and type(n.value) is int)
    if not sites:
        return False
    node = rng.choice(sites)
    node.value += rng.choice([1, -1]) if node.value != 0 else 1
    return True


def _boolean_swap(fn, rng):
    sites = _sites(fn, lambda n: isinstance(n, ast.BoolOp))
    if not sites:
        return False
    node = rng.choice(sites)
    node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    return True


def _drop_statement(fn, rng):
    bodies = [n for n in ast.walk(fn) if isinstance(getattr(n, "body", None), list) and len(n.body) > 1]
    if not bodies:
        return False
    owner = rng.choice(bodies)
    candidates = [i for i, s in enumerate(owner.body) if not isinstance(s, ast.Return)]
    if not candidates:
        return False
    del owner.body[rng.choice(candidates)]
    return True


def _wrong_variable(fn, rng):
    names = sorted(
        {a.arg for a in fn.args.args}
        | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    )
    sites = _sites(fn, lambda n: isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in names)
    if len(names) < 2 or not sites:
        return False
    node = rng.choice(sites)
    node.id = rng.choice([n for n in names if n != node.id])
    return True


def _negation_drop(fn, rng):
    sites = _sites(fn, lambda n: isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not))
    if not sites:
        return False
    node = rng.choice(sites)
    for parent in ast.walk(fn):
        for field_name, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field_name, node.operand)
                return True
            if isinstance(value, list) and node in value:
                value[value.index(node)] = node.operand
                return True
    return False


OPERATORS: dict[str, Callable] = {
    "operator_swap": _operator_swap,
    "comparison_swap": _comparison_swap,
    "off_by_one": _off_by_one,
    "boolean_swap": _boolean_swap,
    "drop_statement": _drop_statement,
    "wrong_variable": _wrong_variable,
    "negation_drop": _negation_drop,
}


def function_source(code: str, name: str) -> tuple[ast.Module, ast.FunctionDef]:
    tree = ast.parse(code)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return tree, fn


def mutants(code: str, name: str, seed: int, tries: int = 3):
    """Yield (operator, mutated code) candidates in a seeded order; the whole module is unparsed."""
    rng = random.Random(seed)
    order = list(OPERATORS)
    rng.shuffle(order)
    seen = set()
    for _ in range(tries):
        for op in order:
            tree, fn = function_source(code, name)  # a fresh parse for every candidate
            if not OPERATORS[op](fn, rng):
                continue
            try:
                mutated = ast.unparse(ast.fix_missing_locations(tree))
            except (ValueError, AttributeError):
                continue
            if mutated not in seen:
                seen.add(mutated)
                yield op, mutated
