"""Prompting baselines that a study compares with tuning: in-context learning (`icl`, random
training examples, several seeds) and retrieval-augmented prompting (`rag`, retrieved training
examples). Both are entries of the method registry, so they are selected like a tuning method;
they train nothing and change only the prompts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from codepeft.baselines.prompting import TaskPrompt, assemble
from codepeft.baselines.retrieval import Reranker, build_index, describe
from codepeft.config import DatasetSpec
from codepeft.data.formats import query_text
from codepeft.errors import CodepeftError

__all__ = ["Baseline", "TaskPrompt", "make_baseline"]
FALLBACK_EXAMPLES = "stdlib-instruct"  # docstring -> body pairs: the natural pool for HumanEval-style tasks


@dataclass
class Baseline:
    """Adds k training examples to each prompt. `seeds` are the repetitions to run (ICL draws
    new examples per seed; retrieval is deterministic and runs once)."""

    name: str
    options: dict[str, Any]
    seeds: list[int] = field(default_factory=lambda: [0])
    pool: list[dict] = field(default_factory=list)
    pool_source: str = ""

    @property
    def shots(self) -> int:
        return int(self.options["shots"])

    def label(self) -> str:
        raise NotImplementedError

    def select(self, queries: list[str], seed: int) -> list[list[dict]]:
        """For each query, the examples to show, most relevant first."""
        raise NotImplementedError

    def load_pool(self, task) -> None:
        source = self.options.get("examples") or getattr(task, "dataset", None) or FALLBACK_EXAMPLES
        if source == self.pool_source:
            return
        from codepeft.data import load_examples

        self.pool = load_examples(DatasetSpec(source=source), "train")
        self.pool_source = source
        self._on_pool()

    def _on_pool(self) -> None:
        pass

    def prompts(self, task, tests: list[TaskPrompt], queries: list[str], fmt, tokenizer, budget, seed):
        """(prompts, examples kept per prompt) for one repetition."""
        self.load_pool(task)
        chosen = self.select(queries, seed)
        out = [assemble(t, shots, fmt, tokenizer, budget) for t, shots in zip(tests, chosen, strict=True)]
        return [text for text, _ in out], [kept for _, kept in out]


class ICL(Baseline):
    def label(self) -> str:
        draw = "" if self.options["draw"] == "fixed" else ", per problem"
        return f"ICL ({self.shots} ex.{draw}, {len(self.seeds)} seed{'s' if len(self.seeds) != 1 else ''})"

    def select(self, queries, seed):
        if self.shots > len(self.pool):
            raise CodepeftError(f"icl: shots={self.shots} but {self.pool_source!r} has {len(self.pool)} examples")
        if self.options["draw"] == "fixed":  # one k-shot prompt per seed, the classical setting
            shots = random.Random(f"icl:{seed}").sample(self.pool, self.shots)
            return [shots for _ in queries]
        return [random.Random(f"icl:{seed}:{i}").sample(self.pool, self.shots) for i in range(len(queries))]


class RAG(Baseline):
    def label(self) -> str:
        o = self.options
        return f"RAG ({describe(o['retriever'], o['embedder'], o['rerank'])}, {self.shots} ex.)"

    def _on_pool(self) -> None:
        o = self.options
        documents = [query_text(ex) for ex in self.pool]
        self.index = build_index(o["retriever"], documents, o["embedder"])
        self.reranker = Reranker(o["rerank"], documents, o["embedder"]) if o["rerank"] else None

    def select(self, queries, seed):
        first = max(self.shots, int(self.options["candidates"])) if self.reranker else self.shots
        hits = self.index.search(queries, first)
        if self.reranker:
            hits = [self.reranker.rerank(q, h) for q, h in zip(queries, hits, strict=True)]
        return [[self.pool[i] for i, _ in h[: self.shots]] for h in hits]


def make_baseline(name: str, options: dict[str, Any]) -> Baseline:
    """A baseline from its registry entry's options (defaults filled in, unknown names refused)."""
    from codepeft.methods import MethodFamily, get_method

    method = get_method(name)
    if method.family is not MethodFamily.BASELINE:
        raise CodepeftError(f"{method.name!r} is a tuning method: train it (codepeft train), then evaluate the run")
    opts = method.options(options)
    if int(opts["shots"]) < 0:
        raise CodepeftError(f"{method.name}: shots must be >= 0, got {opts['shots']}")
    if method.name == "icl":
        if opts["draw"] not in ("fixed", "per-problem"):
            raise CodepeftError(f"icl: draw must be fixed or per-problem, not {opts['draw']!r}")
        return ICL(method.name, opts, seeds=list(range(int(opts["seeds"]))))
    if opts["retriever"] not in ("bm25", "dense"):
        raise CodepeftError(f"rag: retriever must be bm25 or dense, not {opts['retriever']!r}")
    return RAG(method.name, opts)
