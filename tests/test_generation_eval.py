"""Generation (batched, left-padded, per-sequence stops, sampling) and `codepeft eval` end to end."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from typer.testing import CliRunner

from codepeft.generation import GenerationSettings, HFBackend

PROMPTS = ["def add(a, b):\n", "import os\n\nclass Thing:\n    def __init__(self):\n", "x = [1, 2"]


def _load(tiny_model, arch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = tiny_model(arch)
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "t5"])
def test_batched_greedy_equals_one_by_one(tiny_model, arch):
    model, tok = _load(tiny_model, arch)
    backend = HFBackend(model, tok)
    settings = GenerationSettings(max_new_tokens=12, batch_size=3)
    batched = backend.generate(PROMPTS, settings, progress=False)
    single = [backend.generate([p], settings, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(c) == 1 for c in batched)
    if arch != "t5":  # the random tiny T5 emits only special tokens, which decode to ""
        assert any(c[0] for c in batched)


def test_sampling_gives_n_seeded_samples_and_stops_per_sequence(tiny_model):
    model, tok = _load(tiny_model, "gpt_bigcode")
    backend = HFBackend(model, tok)
    settings = GenerationSettings(n=4, temperature=1.0, max_new_tokens=16, batch_size=8, seed=3)
    first = backend.generate(PROMPTS, settings, progress=False)
    assert [len(c) for c in first] == [4, 4, 4]
    assert first == backend.generate(PROMPTS, settings, progress=False)  # seeded
    assert len({s for c in first for s in c}) > 3  # and really sampled
    stop = GenerationSettings(n=4, temperature=1.0, max_new_tokens=16, batch_size=8, seed=3, stop=["e", "a"])
    for samples in backend.generate(PROMPTS, stop, progress=False):
        assert all("e" not in s and "a" not in s for s in samples)


def test_a_prompts_samples_do_not_depend_on_its_batch(tiny_model, monkeypatch):
    """Each row samples from its own random stream (codepeft.generation.sampling): the same prompt
    gets the same samples alone, in a batch with others, in another order, with rows dropped as
    they finish, and through transformers' one-call path (virtual-token methods)."""
    model, tok = _load(tiny_model, "llama")
    backend = HFBackend(model, tok)
    settings = GenerationSettings(n=3, temperature=0.8, top_p=0.9, max_new_tokens=10, batch_size=9, seed=5)
    together = backend.generate(PROMPTS, settings, progress=False)
    alone = [backend.generate([p], settings, progress=False)[0] for p in PROMPTS]
    reordered = backend.generate(PROMPTS[::-1], settings, progress=False)[::-1]
    assert together == alone == reordered
    monkeypatch.setattr(HFBackend, "CHUNK", 3)
    assert backend.generate(PROMPTS, settings, progress=False) == together
    monkeypatch.setattr(HFBackend, "compacting", property(lambda self: False))
    assert backend.generate(PROMPTS, settings, progress=False) == together
    other_seed = backend.generate(PROMPTS, GenerationSettings(**{**settings.__dict__, "seed": 6}), progress=False)
    assert other_seed != together


def test_seeded_sampling_draws_from_the_tempered_top_p_distribution():
    """The Gumbel-max draw is a sample of softmax(logits / T) restricted to the top-p set."""
    from codepeft.generation.sampling import SeededSampling

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -8.0]])
    probs = torch.softmax(logits / 0.7, dim=-1)[0]
    keep = probs >= probs[1]  # top_p=0.9 keeps the two most likely tokens
    assert probs[:1].sum() < 0.9 <= probs[:2].sum()
    expected = torch.where(keep, probs, 0.0) / probs[keep].sum()
    counts = torch.zeros(5)
    for seed in range(4000):
        sampler = SeededSampling(0.7, 0.9, [seed])
        counts[sampler(torch.zeros(1, 4, dtype=torch.long), logits.clone()).argmax()] += 1
    assert counts[2:].sum() == 0
    assert torch.allclose(counts / counts.sum(), expected, atol=0.03)


def test_eval_scores_a_tuned_prompt_learning_run(tmp_path, tiny_model, train_file):
    from codepeft import load_config, train
    from codepeft.evaluation import evaluate

    run = train(
        load_config(
            None,
            [
                f"model.name_or_path={tiny_model('gpt_bigcode')}",
                "method.name=prefix",
                f"data.train.0.source={train_file}",
                "data.max_length=64",
                "train.max_steps=2",
                "data.format=octocoder",
            ],
        ),
        tmp_path / "run",
    ).run_dir
    settings = GenerationSettings(n=2, temperature=0.8, max_new_tokens=24, batch_size=4)
    results = evaluate(str(run), ["humaneval", "stdlib-instruct-loss"], settings, [1, 2], limit=3)
    he = json.loads((run / "eval" / "humaneval.json").read_text())
    assert he["prompt_format"] == "octocoder" and he["target"]["method"] == "prefix"
    assert len(he["problems"]) == 3 and all(len(p["samples"]) == 2 for p in he["problems"])
    sample = he["problems"][0]["samples"][0]
    assert sample["program"].startswith(he["problems"][0]["prompt"].split("Answer:\n", 1)[1])
    assert sample["outcome"] in ("passed", "failed", "error", "timeout", "killed", "compile_error")
    assert set(he["scores"]) == {"pass@1", "pass@2"} and he["scores"]["pass@1"]["n"] == 2
    loss = results["stdlib-instruct-loss"]["scores"]["loss"]
    assert 0 < loss["value"] < 20 and loss["examples"] == 3


def test_loss_task_matches_the_models_own_loss(tiny_model):
    from codepeft.data.formats import render
    from codepeft.data.tokenize import encode
    from codepeft.tasks.loss import LossTask

    model, tok = _load(tiny_model, "llama")
    problems = [{"task_id": "a", "instruction": "def f():\n", "input": "", "output": "    return 1\n"}]
    result = LossTask("stdlib-instruct").evaluate_loss(model, tok, problems, "plain")
    prompt, response = render("plain", problems[0])
    item = encode(tok, prompt, response, 1024, "response", False)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([item["input_ids"]]), labels=torch.tensor([item["labels"]])).loss.item()
    assert result["scores"]["loss"]["value"] == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
def test_loss_task_skips_virtual_tokens(tiny_model, method):
    """Prompt-learning methods prepend virtual tokens; the loss must equal peft's own loss."""
    from codepeft.data.formats import render
    from codepeft.data.tokenize import encode
    from codepeft.methods import ApplyContext, get_method
    from codepeft.tasks.loss import LossTask

    model, tok = _load(tiny_model, "llama")
    m = get_method(method)
    model = m.apply(model, m.options({"num_virtual_tokens": 4}), ApplyContext()).eval()
    problems = [{"task_id": "a", "instruction": "def f():\n", "input": "", "output": "    return 1\n"}]
    result = LossTask("stdlib-instruct").evaluate_loss(model, tok, problems, "plain")
    item = encode(tok, *render("plain", problems[0]), 1024, "response", False)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([item["input_ids"]]), labels=torch.tensor([item["labels"]])).loss.item()
    assert result["scores"]["loss"]["value"] == pytest.approx(ref, rel=1e-5)


def test_eval_cli_on_a_base_model_and_bad_k(tmp_path, tiny_model):
    from codepeft.cli import app

    runner = CliRunner()
    out = tmp_path / "ev"
    result = runner.invoke(
        app,
        [
            "eval",
            str(tiny_model("qwen2")),
            "--tasks",
            "humaneval",
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
            "--output-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and (out / "humaneval.json").is_file()
    bad = runner.invoke(app, ["eval", str(tiny_model("qwen2")), "--tasks", "humaneval", "--k", "10"])
    assert bad.exit_code == 2 and "raise --n" in bad.output


def test_exec_cli_prints_one_json_object(tmp_path):
    from codepeft.cli import app

    prog = tmp_path / "p.py"
    prog.write_text("import sys\nsys.exit(0)\nassert False\n")
    result = CliRunner().invoke(app, ["exec", str(prog), "--timeout", "5"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["outcome"] == "error" and data["exit_code"] == 0 and data["isolation"] in ("bwrap", "rlimits")


def test_eval_cli_reads_task_data_from_a_local_file(tmp_path, tiny_model):
    from helpers import FIXTURES

    out = tmp_path / "ev"
    from helpers import run_eval

    output, results = run_eval(
        str(tiny_model("llama")),
        "humanevalsynthesize-java",
        out,
        "--max-new-tokens",
        "8",
        "--task-data",
        f"humanevalsynthesize-java={FIXTURES / 'humanevalpack_java.jsonl'}",
    )
    data = results["humanevalsynthesize-java"]
    assert len(data["problems"]) == 2 and data["scores"]["pass@1"]["value"] == 0.0  # a random model's Java
    assert all(s["outcome"] in ("compile_error", "failed", "error") for p in data["problems"] for s in p["samples"])


def test_finished_rows_leave_the_batch(tiny_model, monkeypatch):
    model, tok = _load(tiny_model, "llama")
    backend = HFBackend(model, tok)
    settings = GenerationSettings(max_new_tokens=12, batch_size=3, stop=["e"])
    monkeypatch.setattr(HFBackend, "compacting", property(lambda self: False))
    reference = backend.generate(PROMPTS, settings, progress=False)
    monkeypatch.undo()

    sizes = []
    original = model.generate

    def recording(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    monkeypatch.setattr(HFBackend, "CHUNK", 2)
    monkeypatch.setattr(HFBackend, "MIN_ROWS", 1)
    assert backend.generate(PROMPTS, settings, progress=False) == reference  # same text, chunk by chunk
    assert sizes[0] == 3 and len(sizes) > 1
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes) < 3  # rows that reached the stop string ("e" is frequent) stopped costing compute
    # on a CPU, 2 or 3 rows run as 4 (copies of the first, discarded): the same text
    sizes.clear()
    monkeypatch.setattr(HFBackend, "MIN_ROWS", 4)
    assert backend.generate(PROMPTS, settings, progress=False) == reference
    assert sizes[0] == 4 and all(size in (1, 4) for size in sizes)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_vllm_would_serve_the_tuned_weights(tiny_model, tmp_path, monkeypatch, method):
    """vLLM needs a GPU, but what it is asked to serve is decided here: the adapter of a LoRA run
    (over its base model), the saved weights of a full fine-tuning run."""
    import codepeft.evaluation as ev
    from codepeft.config import load_config
    from codepeft.training import train

    base = tiny_model("gpt_bigcode")
    run = train(
        load_config(None, [f"model.name_or_path={base}", f"method.name={method}", "train.max_steps=1",
                           "data.max_length=64", "data.train.0.limit=16"]),
        tmp_path / "run",
    ).run_dir  # fmt: skip
    asked, original = {}, ev.make_backend

    def recording_backend(kind, model, tok, serve_model=None, adapter_dir=None, family=None):
        asked.update(serve_model=serve_model, adapter_dir=adapter_dir, family=family)
        return original(kind, model, tok, serve_model, adapter_dir, family)

    monkeypatch.setattr(ev, "make_backend", recording_backend)
    ev.evaluate(str(run), ["humaneval"], GenerationSettings(max_new_tokens=4), [1], limit=1)
    if method == "lora":
        assert asked == {"serve_model": str(base), "adapter_dir": str(run / "adapter"), "family": "lora"}
    else:
        assert asked == {"serve_model": str(run / "model"), "adapter_dir": None, "family": "full"}


def test_per_task_limits_take_each_tasks_first_problems(tmp_path, tiny_model):
    """`limits` (a study's `eval.limits`) caps each task on its own; `limit` is the rest's cap."""
    from codepeft.evaluation import evaluate

    settings = GenerationSettings(max_new_tokens=4)
    results = evaluate(
        str(tiny_model("gpt_bigcode")), ["humaneval", "mbpp"], settings, [1], limit=3,
        output_dir=tmp_path / "ev", limits={"humaneval": 1},
    )  # fmt: skip
    assert [len(results[t]["problems"]) for t in ("humaneval", "mbpp")] == [1, 3]
    assert (results["humaneval"]["limit"], results["mbpp"]["limit"]) == (1, 3)


def test_each_prompt_is_computed_once_for_its_n_samples(tiny_model, monkeypatch):
    """The prompt's KV cache is computed once and shared by its n samples (transformers repeats
    the prompt n times before its forward pass); the samples are those of the unshared path."""
    model, tok = _load(tiny_model, "llama")
    backend = HFBackend(model, tok)
    settings = GenerationSettings(n=4, temperature=0.8, top_p=0.9, max_new_tokens=6, batch_size=12, seed=1)
    widths = []
    original = model.forward

    def recording(*args, **kwargs):
        widths.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    backend.generate(PROMPTS, settings, progress=False)
    prompt_width = max(len(ids) for ids in tok(PROMPTS)["input_ids"])
    assert widths[0] == (3, prompt_width - 1)  # the prompts once each, all but their last token
    assert all(w[1] == 1 for w in widths[1:]) and widths[1][0] == 12  # then one token a row, n rows a prompt
    monkeypatch.undo()
    # the shared cache gives each row the logits the repeated prompt gives it (to fp32 rounding)
    tok.padding_side, tok.pad_token = "left", tok.pad_token or tok.eos_token
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"].repeat_interleave(4, 0), enc["attention_mask"].repeat_interleave(4, 0)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        cache = backend._shared_prefill(enc, 4, None)
        shared = model(ids[:, -1:], attention_mask=mask, position_ids=positions[:, -1:], past_key_values=cache)
        repeated = model(ids, attention_mask=mask, position_ids=positions)
    assert torch.allclose(shared.logits[:, -1], repeated.logits[:, -1], atol=1e-5)


@pytest.mark.parametrize("temperature", [0.2, 0.8, 1.0, 3.0])
def test_top_p_keeps_the_tokens_transformers_keeps(temperature):
    """`nucleus` ranks only the top tokens (growing the number until every row's nucleus ends
    inside them) and keeps what `TopPLogitsWarper` keeps after sorting the whole vocabulary; a
    token can differ only where its predecessors' mass equals top_p to within float rounding
    (the two sum in opposite orders)."""
    from transformers import TopPLogitsWarper

    from codepeft.generation.sampling import nucleus

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4096, generator=generator) * 4 / temperature
    logits[:, :3] += 12 / temperature  # peaked rows as a code model's, flat ones at high temperature
    for top_p in (0.5, 0.95):
        theirs = torch.isfinite(TopPLogitsWarper(top_p)(None, logits.clone()))
        index, keep = nucleus(logits, top_p)
        ours = torch.zeros_like(theirs).scatter_(1, index, keep)
        assert ours.any(dim=-1).all()
        probs = logits.softmax(dim=-1)
        for row, token in (theirs != ours).nonzero().tolist():
            above = probs[row][probs[row] > probs[row, token]].sum()
            assert abs(above - top_p) < 1e-4, (row, token, float(above))
        assert (theirs != ours).sum() <= 2


def test_the_stop_string_criterion_is_built_once(tiny_model, monkeypatch):
    """transformers builds its stop-string tables on every `generate` call (seconds for a large
    vocabulary); the backend builds them once per stop list and still stops each row."""
    import transformers

    from codepeft.generation import backends

    model, tok = _load(tiny_model, "llama")
    built = []
    real = transformers.StopStringCriteria

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "StopStringCriteria", counting)
    monkeypatch.setattr(HFBackend, "CHUNK", 2)
    backend = HFBackend(model, tok)
    settings = GenerationSettings(n=2, temperature=1.0, max_new_tokens=12, batch_size=2, stop=["e"], seed=2)
    samples = backend.generate(PROMPTS, settings, progress=False)
    assert len(built) == 1
    assert all("e" not in s for c in samples for s in c)


def test_the_growing_kv_cache_gives_the_dynamic_caches_logits(tiny_model):
    """`GrowingLayer` writes into reserved room instead of concatenating: the same logits step
    by step, across a buffer that fills up, rows dropped and rows repeated."""
    from transformers import DynamicCache

    from codepeft.generation.kv_cache import GrowingLayer, growing_cache

    model, tok = _load(tiny_model, "llama")
    ids = torch.randint(5, 100, (3, 150))
    growing, dynamic = growing_cache(model), DynamicCache()
    with torch.no_grad():
        for cache in (growing, dynamic):
            model(ids[:, :20], past_key_values=cache)
        for step in range(20, 150):  # room for 20 + 128 positions: it grows at 149
            if step == 60:
                for cache in (growing, dynamic):
                    cache.batch_select_indices(torch.tensor([0, 2]))
                ids = ids[[0, 2]]
            if step == 90:
                for cache in (growing, dynamic):
                    cache.batch_repeat_interleave(2)
                ids = ids.repeat_interleave(2, 0)
            logits = [model(ids[:, step : step + 1], past_key_values=c).logits for c in (growing, dynamic)]
            assert torch.allclose(*logits, atol=1e-6), step
    assert all(type(layer) is GrowingLayer for layer in growing.layers)
    assert growing.get_seq_length() == dynamic.get_seq_length() == 150
    assert growing.layers[0].key_buffer.shape[-2] >= 149 + 128  # grew once, room to spare again


_ALLOCATE = """
import ctypes, sys, torch
from codepeft.allocator import GENERATION, TRAINING, retain_freed_memory
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
mode, rows = sys.argv[1], int(sys.argv[2])
applied = False
if mode == "train":
    applied = retain_freed_memory(TRAINING)
if mode in ("generate", "train"):  # a process that trains and then generates keeps training's setting
    applied = retain_freed_memory(GENERATION)
before = libc.mallinfo2()
logits = torch.ones(rows, 49152)  # 40 rows: a decode step's logits, 7.5 MB
mapped = libc.mallinfo2().hblkhd - before.hblkhd
del logits
print(applied, mapped >> 20, (libc.mallinfo2().fordblks - before.fordblks) >> 20)  # free heap it left
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings exist on Linux only")
def test_generating_and_training_keep_freed_memory_in_the_heap():
    """With glibc's defaults a logits-sized tensor gets pages of its own from the kernel (mmap),
    which go back when it is freed, to be faulted in again the next step; once a generating
    process applies codepeft's settings it comes from the heap and its memory stays there for
    the next one. Training's setting covers a loss chunk's logits too (2,000 rows: 375 MB) and
    is not lowered by generating afterwards. A user's own MALLOC_ variables win."""
    import subprocess

    def run(mode: str, rows: int = 40, **env) -> tuple[bool, int, int]:
        out = subprocess.run(
            [sys.executable, "-c", _ALLOCATE, mode, str(rows)], capture_output=True, text=True, check=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
        )  # fmt: skip
        applied, mapped_mb, free_mb = out.stdout.split()
        return applied == "True", int(mapped_mb), int(free_mb)

    assert run("default") == (False, 7, 0)  # mapped on its own, given back when freed
    assert run("generate") == (True, 0, 7)  # from the heap, kept there once freed
    assert run("generate", 2000) == (True, 375, 0)  # above generation's threshold: mapped
    assert run("train", 2000) == (True, 0, 375)
    assert run("generate", MALLOC_TRIM_THRESHOLD_="131072")[:2] == (False, 7)  # the user's setting stands
