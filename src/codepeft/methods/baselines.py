"""Registry entries of the prompting baselines (`icl`, `rag`): they train nothing, so a study
lists them beside tuning methods and `codepeft eval --method` runs them on any model. The
prompting itself lives in `codepeft.baselines`."""

from __future__ import annotations

from codepeft.methods.registry import Method, MethodFamily, register_method

ICL_DEFAULTS = {"shots": 3, "seeds": 5, "draw": "fixed", "examples": None}
RAG_DEFAULTS = {"shots": 3, "retriever": "bm25", "embedder": None, "rerank": None, "candidates": 20, "examples": None}


def _baseline(name: str, style: str, defaults: dict, notes: str) -> None:
    register_method(
        Method(
            name=name,
            family=MethodFamily.BASELINE,
            style=style,
            learning_rate=0.0,
            defaults=defaults,
            apply=None,  # trains nothing
            option_names=lambda: set(defaults),
            notes=notes,
        )
    )


_baseline(
    "icl",
    "nothing: k random training examples in the prompt",
    ICL_DEFAULTS,
    "examples: a dataset source (default: the task's own training split, else stdlib-instruct); "
    "draw: fixed (one k-shot prompt per seed) or per-problem; seeds: repetitions reported as mean and spread",
)
_baseline(
    "rag",
    "nothing: k retrieved training examples in the prompt",
    RAG_DEFAULTS,
    "retriever: bm25 (bm25s) or dense (sentence-transformers; offline default all-MiniLM-L6-v2 from the "
    "`rag` extra, or any model id); rerank: dense or a cross-encoder id over `candidates` first-stage hits",
)
