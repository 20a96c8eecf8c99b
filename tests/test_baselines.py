"""Prompting baselines: retrieval neighbours, prompt assembly within the context, seeded ICL draws,
and `codepeft eval --method icl|rag` end to end."""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES
from typer.testing import CliRunner

from codepeft.baselines import ICL, RAG, TaskPrompt, make_baseline
from codepeft.baselines.prompting import SEPARATOR, assemble, shot_text
from codepeft.baselines.retrieval import BM25Index, DenseIndex, Reranker, code_terms
from codepeft.cli import app
from codepeft.config import DatasetSpec
from codepeft.data import load_examples
from codepeft.data.formats import query_text
from codepeft.errors import CodepeftError

POOL_FILE = FIXTURES / "retrieval_pool.jsonl"


@pytest.fixture(scope="module")
def pool():
    return load_examples(DatasetSpec(source=str(POOL_FILE)))


def _docs(pool):
    return [query_text(ex) for ex in pool]


# Each query is written to share words (for BM25) with exactly one pool example.
LEXICAL = {
    "load the rows of a csv file": 0,
    "connect to a tcp server on a port": 1,
    "hexdigest of sha256 hash": 3,
    "decode json from a string": 4,
    "how many days between two dates": 5,
}
# Paraphrases with (almost) no word in common: only meaning can find these.
SEMANTIC = {
    "establish a network link to a remote machine": 1,
    "put a list of integers in increasing order": 2,
    "flip a piece of text backwards": 7,
    "tally the frequency of every token in a sentence": 6,
}


def test_code_terms_split_identifiers():
    assert code_terms("def readCsvRows(file_path):") == "def read csv rows(file path):"


def test_bm25_returns_the_expected_neighbours(pool):
    index = BM25Index(_docs(pool))
    hits = index.search(list(LEXICAL), k=3)
    assert [h[0][0] for h in hits] == list(LEXICAL.values())
    assert all(h[0][1] > h[1][1] for h in hits)  # a clear winner, not a tie


def test_dense_returns_the_expected_neighbours_offline(pool):
    index = DenseIndex(_docs(pool))  # the packaged all-MiniLM-L6-v2, no hub
    hits = index.search(list(SEMANTIC), k=3)
    assert [h[0][0] for h in hits] == list(SEMANTIC.values())


def test_indexes_are_cached_by_content(pool):
    from codepeft.paths import cache_dir

    docs = _docs(pool)
    first = DenseIndex(docs)
    cached = list((cache_dir() / "indexes").glob("dense-*.npy"))
    assert cached
    again = DenseIndex(docs)
    assert (again.vectors == first.vectors).all()
    BM25Index(docs)
    assert list((cache_dir() / "indexes").glob("bm25-*"))
    other = DenseIndex(docs[:-1])  # different content, different index
    assert other.vectors.shape[0] == len(docs) - 1


def test_dense_rerank_reorders_bm25_candidates(pool):
    docs = _docs(pool)
    query = "connect to a server and return the socket"
    candidates = BM25Index(docs).search([query], k=len(docs))[0]
    reranked = Reranker("dense", docs).rerank(query, candidates)
    assert reranked[0][0] == 1
    assert sorted(i for i, _ in reranked) == sorted(i for i, _ in candidates)
    scores = [s for _, s in reranked]
    assert scores == sorted(scores, reverse=True)


def test_rag_selects_retrieved_examples(pool):
    rag = make_baseline("rag", {"shots": 2, "examples": str(POOL_FILE)})
    assert isinstance(rag, RAG) and rag.seeds == [0]
    rag.load_pool(task=None)
    chosen = rag.select(list(LEXICAL), seed=0)
    assert [c[0]["instruction"] for c in chosen] == [pool[i]["instruction"] for i in LEXICAL.values()]
    assert all(len(c) == 2 for c in chosen)
    assert rag.label() == "RAG (BM25, 2 ex.)"
    dense = make_baseline("rag", {"retriever": "dense", "rerank": "dense", "shots": 1, "examples": str(POOL_FILE)})
    assert dense.label() == "RAG (dense all-MiniLM-L6-v2 + dense re-rank, 1 ex.)"
    dense.load_pool(task=None)
    assert [c[0]["instruction"] for c in dense.select(list(SEMANTIC), 0)] == [
        pool[i]["instruction"] for i in SEMANTIC.values()
    ]


def test_icl_draws_reproduce_per_seed(pool):
    icl = make_baseline("icl", {"shots": 2, "examples": str(POOL_FILE)})
    assert isinstance(icl, ICL) and icl.seeds == [0, 1, 2, 3, 4]
    icl.load_pool(task=None)
    queries = ["q1", "q2", "q3"]
    a, b = icl.select(queries, seed=1), icl.select(queries, seed=1)
    assert a == b
    assert a[0] == a[1] == a[2]  # fixed draw: one k-shot prompt per seed
    draws = {tuple(ex["instruction"] for ex in icl.select(queries, seed=s)[0]) for s in range(5)}
    assert len(draws) > 1  # seeds change the examples
    per = make_baseline("icl", {"shots": 2, "draw": "per-problem", "examples": str(POOL_FILE)})
    per.load_pool(task=None)
    chosen = per.select(["q"] * 6, seed=0)
    assert chosen == per.select(["q"] * 6, seed=0)
    assert len({tuple(e["instruction"] for e in c) for c in chosen}) > 1
    assert icl.label() == "ICL (2 ex., 5 seeds)"


def test_assembly_drops_examples_never_the_test_prompt(pool, tiny_tokenizer):
    test = TaskPrompt("Question: reverse a list\n\nAnswer:\n", "reverse a list", "")
    shots = pool[:3]

    def length(text):
        return len(tiny_tokenizer(text)["input_ids"])

    full, kept = assemble(test, shots, "octocoder", tiny_tokenizer, None)
    assert kept == 3 and full.endswith(test.text)
    # the most relevant example sits next to the test prompt
    assert full.endswith(shot_text(shots[0], "octocoder").rstrip("\n") + SEPARATOR + test.text)
    one, _ = assemble(test, shots[:1], "octocoder", tiny_tokenizer, None)
    text, kept = assemble(test, shots, "octocoder", tiny_tokenizer, length(one))
    assert (text, kept) == (one, 1)
    assert length(text) <= length(one)
    # too small even for the test prompt: it goes whole, with no example
    text, kept = assemble(test, shots, "octocoder", tiny_tokenizer, length(test.text) - 1)
    assert (text, kept) == (test.text, 0)
    # a long first example that does not fit is skipped for a shorter one that does
    long = {"instruction": "x " * 400, "input": "", "output": "pass\n"}
    short_only, _ = assemble(test, [pool[7]], "octocoder", tiny_tokenizer, None)
    text, kept = assemble(test, [long, pool[7]], "octocoder", tiny_tokenizer, length(short_only))
    assert (text, kept) == (short_only, 1)


def test_chat_layout_puts_examples_in_turns(pool, tiny_tokenizer):
    tok = tiny_tokenizer
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    try:
        test = TaskPrompt("unused", "reverse a list", "def rev(xs):\n")
        text, kept = assemble(test, pool[:2], "chat", tok, None)
    finally:
        tok.chat_template = None
    assert kept == 2
    assert text.count("<|user|>") == 3 and text.count("<|assistant|>") == 3
    assert text.endswith("<|user|>reverse a list\n<|assistant|>def rev(xs):\n")
    assert text.index(pool[1]["output"]) < text.index(pool[0]["output"])  # most relevant last


def test_bad_baseline_options_are_refused():
    with pytest.raises(CodepeftError, match="unknown option"):
        make_baseline("icl", {"k": 3})
    with pytest.raises(CodepeftError, match="retriever must be bm25 or dense"):
        make_baseline("rag", {"retriever": "tfidf"})
    with pytest.raises(CodepeftError, match="tuning method"):
        make_baseline("lora", {})
    icl = make_baseline("icl", {"shots": 99, "examples": str(POOL_FILE)})
    icl.load_pool(task=None)
    with pytest.raises(CodepeftError, match="shots=99"):
        icl.select(["q"], 0)


def test_baselines_are_listed_and_cannot_be_trained(tmp_path):
    result = CliRunner().invoke(app, ["methods", "--json"])
    rows = {r["method"]: r for r in json.loads(result.output)}
    assert rows["icl"]["family"] == rows["rag"]["family"] == "baseline"
    from codepeft.config import load_config
    from codepeft.training import train

    with pytest.raises(CodepeftError, match="prompting baseline and trains nothing"):
        train(load_config(None, ["method.name=icl", "model.name_or_path=/nonexistent"]), tmp_path / "run")


def test_eval_with_icl_repeats_over_seeds(tiny_model, tmp_path):
    from helpers import run_eval

    output, results = run_eval(
        tiny_model("gpt_bigcode"),
        "humaneval,stdlib-instruct-loss",
        tmp_path / "ev",
        "--limit", "2", "--max-new-tokens", "8",
        "--method", "icl", "--method-opt", "shots=2", "--method-opt", "seeds=3",
    )  # fmt: skip
    he = results["humaneval"]
    assert "ICL (2 ex., 3 seeds)" in output
    assert he["target"]["method"] == "icl" and he["baseline"]["examples_from"] == "stdlib-instruct"
    assert he["baseline"]["seeds"] == [0, 1, 2]
    score = he["scores"]["pass@1"]
    assert len(score["per_seed"]) == 3 and score["ci95_over"] == "seeds"
    assert score["value"] == pytest.approx(sum(score["per_seed"]) / 3)
    assert sorted({p["seed"] for p in he["problems"]}) == [0, 1, 2] and len(he["problems"]) == 6
    from codepeft.tasks.humaneval import humaneval_problems

    originals = {p["task_id"]: p["prompt"] for p in humaneval_problems()}
    for p in he["problems"]:
        assert 0 <= p["shots"] <= 2
        assert p["prompt"].endswith(originals[p["task_id"]])  # the test prompt is whole, at the end
        assert p["prompt"].count("def ") >= p["shots"] + 1
    # the tiny model's 512-token context holds the short examples: prompts carry them
    assert any(p["shots"] > 0 for p in he["problems"])
    seeds0 = [p["prompt"] for p in he["problems"] if p["seed"] == 0]
    seeds1 = [p["prompt"] for p in he["problems"] if p["seed"] == 1]
    assert seeds0 != seeds1
    assert results["stdlib-instruct-loss"]["baseline"]["applied"] is False


def test_eval_with_rag_on_a_match_task(tiny_model, tmp_path):
    from helpers import run_eval

    _, results = run_eval(
        tiny_model("llama"),
        "stdlib-instruct",
        tmp_path / "ev",
        "--limit", "3", "--max-new-tokens", "8", "--prompt-format", "alpaca",
        "--method", "rag", "--method-opt", "shots=1",
    )  # fmt: skip
    r = results["stdlib-instruct"]
    assert r["baseline"]["label"] == "RAG (BM25, 1 ex.)"
    for p in r["problems"]:
        if p["shots"]:
            assert p["prompt"].count("### Instruction:") == 2
            assert p["prompt"].endswith("### Response:\n")
