"""The weight products of one SmolLM2-135M decode step: torch's `linear` against oneDNN's over
packed weights (what `codepeft.generation.packed_linear` uses), for several row counts, and the
small layers where packing does not pay (the reason for `packed_linear.MIN_WEIGHTS`).

A diagnostic behind the figures in `packed_linear`'s docstring and benchmarks/NOTES.md; random
weights of SmolLM2-135M's shapes (30 layers of q, k, v, o, gate, up, down and the output head),
no model download. About ten seconds on two cores.

    .venv/bin/python benchmarks/linear_products.py
"""

from __future__ import annotations

import time

import torch

LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
SHAPES = LAYER * 30 + [(49152, 576)]
SMALL = [(8, 576), (576, 8), (192, 576), (576, 576)]  # rank-8 LoRA A / B, a key projection, q


def _timed(fn, repeat: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def _products(weights, packed, rows: int, dtype) -> tuple[float, float]:
    inputs = {k: torch.randn(rows, k, dtype=dtype) for k in {w.shape[1] for w in weights}}

    def plain():
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)

    def oned():
        for w, p in zip(weights, packed, strict=True):
            torch.ops.mkldnn._linear_pointwise(inputs[w.shape[1]], p, None, "none", [], "")

    return _timed(plain, 3), _timed(oned, 3)


def main() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        weights = [torch.randn(s, dtype=dtype) for s in SHAPES]
        packed = [torch.ops.mkldnn._reorder_linear_weight(w) for w in weights]
        for rows in (1, 4, 8, 40, 60):
            plain, oned = _products(weights, packed, rows, dtype)
            print(f"decode step {name:8} {rows:3} rows: linear {plain * 1e3:6.1f} ms, packed {oned * 1e3:6.1f} ms")
        for shape in SMALL:
            w = torch.randn(shape, dtype=dtype)
            p = torch.ops.mkldnn._reorder_linear_weight(w)
            for rows in (8, 40):
                x = torch.randn(rows, shape[1], dtype=dtype)
                plain = _timed(lambda: torch.nn.functional.linear(x, w), 300)  # noqa: B023
                oned = _timed(lambda: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], ""), 300)  # noqa: B023
                times = f"linear {plain * 1e6:6.1f} us, packed {oned * 1e6:6.1f} us"
                print(f"layer {str(shape):12} {name:8} {rows:3} rows: {times}")


if __name__ == "__main__":
    main()
