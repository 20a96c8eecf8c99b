"""Which cells of a study are evaluated together (`eval.together`, the local backend).

Cells whose evaluation can share generation batches over one base model form a group: the ones
that train nothing (zero-shot, ICL, RAG) and plain LoRA cells of that base (not DoRA, not over a
quantised base), with the same tasks and evaluation settings. A group's LoRA cells train in
workers of their own, as every cell does; then one worker evaluates the whole group with
`codepeft.evaluation_together` (the base loaded once, mixed-adapter batches), so the group's
evaluation pays for one process start, one model load and one sandbox pool, and decodes the
members' rows in shared batches. That worker checks each run again (a cell that cannot share
is evaluated there one at a time), so the guess made here from the method only decides grouping.
"""

from __future__ import annotations

import json
from pathlib import Path

from codepeft.families import MethodFamily


def shares_base(cell: dict) -> bool:
    """Whether a cell's evaluation can run in a mixed-adapter batch over its base model."""
    spec = cell["spec"]
    if not spec["trains"]:
        return True
    from codepeft.methods import get_method

    run = spec["run_config"]
    method = get_method(run["method"]["name"])
    return (
        method.family is MethodFamily.LORA
        and method.requires_quantization is None
        and not {**method.defaults, **run["method"]}.get("use_dora")
        and run["model"].get("quantization", "none") == "none"
    )


def groups(cells: list[dict]) -> list[list[dict]]:
    """Cells evaluated together, in groups of two or more (each cell in at most one group)."""
    by_key: dict[str, list[dict]] = {}
    for cell in cells:
        if shares_base(cell):
            spec = cell["spec"]
            key = json.dumps([spec["model"], spec["tasks"], spec["eval"], spec["isolation"]], sort_keys=True)
            by_key.setdefault(key, []).append(cell)
    return [group for group in by_key.values() if len(group) > 1]


def payload(kind: str, cells: list[dict], directory: Path) -> dict:
    """What a worker is given: one cell (train and evaluate), one cell to train only, or a group
    to evaluate together (its log in the study's logs/)."""
    if kind == "cell":
        return cells[0]["spec"]
    if kind == "train":
        return {**cells[0]["spec"], "evaluate": False}
    log = Path(directory) / "logs" / f"together-{Path(cells[0]['spec']['cell_dir']).name}.log"
    return {"together": [{**c["spec"], "cell_id": c["cell_id"]} for c in cells], "log": str(log)}
