"""When a cell's settings changed: the one rule, used by the results store, the cell directory's
marker and `codepeft study status`.

A cell's spec is everything that decides its results (model, method and options, data, training
and evaluation settings). It is recorded as JSON text; two specs are the same when they hold the
same values, whatever the order of their keys. Keys that say how a cell runs but not what it
measures (RUNTIME_KEYS: the sandbox's isolation level, the cell's label for trackers, what a
worker is asked to do with it) are left out of the record.
"""

from __future__ import annotations

import json

RUNTIME_KEYS = ("isolation", "label", "evaluate", "cell_id")


def spec_text(spec: dict) -> str:
    """The spec as it is recorded (keys sorted, so equal specs give equal text)."""
    return json.dumps({k: v for k, v in spec.items() if k not in RUNTIME_KEYS}, sort_keys=True)


def spec_changed(recorded: str | None, spec: dict) -> bool:
    """Whether a cell recorded with `recorded` (None: never recorded) must run again for `spec`."""
    return recorded is not None and json.loads(recorded) != json.loads(spec_text(spec))
