"""Generation throughput: HumanEval sampling (n=20, temperature 0.2, top-p 0.95, the study's stop
sequences) with codepeft's batched backend vs a per-sample `generate` loop as in the two studies'
scripts, same model, prompts and settings.

Reported: useful tokens per second (tokens of the completions after cutting at the first stop
sequence, counted the same way for both) and problems per second, in two settings:
- `study`: the study's stop sequences and EOS end a sample (the offline default model often
  stops after a few tokens, so this mostly measures per-call overhead);
- `fixed`: no stop sequence and EOS suppressed, so every sample is exactly 128 tokens, the
  length of a typical real completion (this measures decoding).

    .venv/bin/python benchmarks/generation_throughput.py --problems 6 --out gen.json
    .venv/bin/python benchmarks/generation_throughput.py --model smollm2-135m --problems 3 --out gen2.json

With `--model smollm2-135m` the reference is transformers' own fastest CPU path instead of the
studies' loop: one `generate` call per problem that samples its n completions as one batch
(`num_return_sequences`), with the default dynamic KV cache and with the static cache
(`cache_implementation="static"`, also compiled by transformers with torch.compile, its compilation
not timed), or one call for all problems (left-padded, dynamic cache; also
with the allocator settings codepeft's generating processes apply, `codepeft.allocator`),
whichever is fastest on this machine. transformers' continuous
batching (`generate_batch`) is not compared: it needs a paged-attention kernel that has no CPU
implementation in transformers 5.23. Two settings: `fixed` (n=20, T=0.2, 128 tokens a sample) and
`greedy` (n=1, the study's stop sequences, at most 128 tokens), where the completions must be the
same text as transformers' (fp32 batching with left padding can flip a near-tie; counted).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, in_fresh_process, machine, run_worker  # noqa: E402

N, TEMPERATURE, TOP_P, MAX_NEW = 20, 0.2, 0.95, 128
REFERENCES = ("dynamic", "static", "compiled", "batched", "batched-heap")  # the fastest is the reference
REFERENCE_NAMES = {
    "dynamic": "dynamic cache", "static": "static cache",
    "compiled": "static cache compiled (torch.compile, warm-up not timed)", "batched": "all problems in one call",
    "batched-heap": "all problems in one call, codepeft's allocator settings",
}  # fmt: skip


def _setup(problems: int, mode: str, dtype: str = "fp32", model_name: str = "default"):
    from codepeft.config import ModelSpec
    from codepeft.models.loading import load_model
    from codepeft.tasks import get_task
    from codepeft.tasks.base import render_prompt

    model, tok = load_model(ModelSpec(name_or_path=model_name, dtype=dtype, device="cpu"))
    task = get_task("humaneval")
    items = task.problems()[:problems]
    stop = task.stop
    if mode == "fixed":
        model.generation_config.suppress_tokens = [tok.eos_token_id]
        stop = []
    return model, tok, [render_prompt(task.prompt(p), "plain", tok) for p in items], stop


def _useful_tokens(tok, completions: list[list[str]]) -> int:
    return sum(len(tok(c, add_special_tokens=False)["input_ids"]) for samples in completions for c in samples)


def worker_codepeft(problems: int, batch: int, mode: str, dtype: str = "fp32", model_name: str = "default") -> dict:
    from codepeft.generation import GenerationSettings
    from codepeft.generation.backends import HFBackend

    model, tok, prompts, stop = _setup(problems, mode, dtype, model_name)
    greedy = mode == "greedy"
    settings = GenerationSettings(
        n=1 if greedy else N, temperature=0.0 if greedy else TEMPERATURE, top_p=TOP_P, max_new_tokens=MAX_NEW,
        batch_size=batch, stop=stop,
    )  # fmt: skip
    backend = HFBackend(model, tok)
    started = time.perf_counter()
    out = backend.generate(prompts, settings, progress=False)
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "tokens": _useful_tokens(tok, out), "samples": sum(len(s) for s in out),
            "texts": out if greedy else None}  # fmt: skip


def worker_transformers(problems: int, mode: str, cache: str, model_name: str) -> dict:
    """transformers' CPU paths: one `generate` per problem, its samples one batch, with the dynamic
    or the static cache; or ("batched") one `generate` for all problems, left-padded."""
    import torch

    from codepeft.generation.backends import truncate_at_stop

    model, tok, prompts, stop = _setup(problems, mode, "fp32", model_name)
    model.eval()
    if cache == "batched-heap":  # what codepeft's generating processes set (codepeft.allocator)
        from codepeft.allocator import retain_freed_memory

        retain_freed_memory()
    greedy = mode == "greedy"
    kwargs = dict(max_new_tokens=MAX_NEW, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    if cache in ("static", "compiled"):
        kwargs["cache_implementation"] = "static"
    if cache == "compiled":  # transformers compiles the static-cache forward itself, on a CPU when asked to
        from transformers import CompileConfig

        kwargs["compile_config"] = CompileConfig()
        kwargs["compile_config"]._compile_all_devices = True
    if greedy:
        kwargs.update(do_sample=False, stop_strings=stop or None, tokenizer=tok)
    else:
        kwargs.update(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, num_return_sequences=N)
    per_prompt = 1 if greedy else N
    tok.padding_side = "left"
    calls = [prompts] if cache.startswith("batched") else [[p] for p in prompts]
    out = []
    if cache == "compiled":  # compile (about a minute on two cores) before the clock starts
        with torch.no_grad():
            model.generate(**tok(calls[0], return_tensors="pt", padding=True), **kwargs)
    started = time.perf_counter()
    for call in calls:
        enc = tok(call, return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, **kwargs)
        texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i in range(len(call)):
            out.append([truncate_at_stop(t, stop) for t in texts[i * per_prompt : (i + 1) * per_prompt]])
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "tokens": _useful_tokens(tok, out), "samples": sum(len(s) for s in out),
            "texts": out if greedy else None}  # fmt: skip


def against_transformers(me: Path, model: str, problems: int, batch: int) -> dict:
    """codepeft vs the faster of transformers' dynamic- and static-cache paths, per setting."""
    result = {}
    for mode in ("fixed", "greedy"):
        refs = {c: in_fresh_process(me, "transformers", str(problems), mode, c, model) for c in REFERENCES}
        best = max(refs, key=lambda c: refs[c]["tokens"] / refs[c]["time_s"])
        ours = in_fresh_process(me, "codepeft", str(problems), str(batch), mode, "fp32", model)
        ref_tps = refs[best]["tokens"] / refs[best]["time_s"]
        row = {
            "reference": "transformers generate, " + REFERENCE_NAMES[best],
            "transformers_tokens_per_s": {c: r["tokens"] / r["time_s"] for c, r in refs.items()},
            "reference_tokens_per_s": ref_tps,
            "codepeft_tokens_per_s": ours["tokens"] / ours["time_s"],
            "speedup": (ours["tokens"] / ours["time_s"]) / ref_tps,
            "tokens_per_sample": ours["tokens"] / ours["samples"],
        }
        if mode == "greedy":
            pairs = [(a[0], b[0]) for a, b in zip(ours["texts"], refs[best]["texts"], strict=True)]
            row["same_greedy_outputs"] = sum(a == b for a, b in pairs)
            row["greedy_outputs"] = len(pairs)
        result[mode] = row
    return result


def worker_loop(problems: int, mode: str) -> dict:
    """One `generate` call per sample, as the studies' scripts do."""
    import torch

    from codepeft.generation.backends import truncate_at_stop

    model, tok, prompts, stop = _setup(problems, mode)
    model.eval()
    out = []
    started = time.perf_counter()
    for p in prompts:
        enc = tok(p, return_tensors="pt")
        samples = []
        for _ in range(N):
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    max_new_tokens=MAX_NEW,
                    stop_strings=stop or None,
                    tokenizer=tok,
                    pad_token_id=tok.pad_token_id,
                )
            text = tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            samples.append(truncate_at_stop(text, stop))
        out.append(samples)
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "tokens": _useful_tokens(tok, out), "samples": sum(len(s) for s in out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+")
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--model", help="smollm2-135m: compare with transformers' fastest path on it instead")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return run_worker(
            args.worker, {"codepeft": worker_codepeft, "loop": worker_loop, "transformers": worker_transformers}
        )
    me = Path(__file__)
    if args.model:
        result = {"machine": machine(), "model": args.model, "problems": args.problems, "n": N}
        return finish({**result, **against_transformers(me, args.model, args.problems, args.batch_size)}, args.out)
    result = {"machine": machine(), "problems": args.problems, "n": N, "batch_size": args.batch_size}
    for mode in ("study", "fixed"):
        loop = in_fresh_process(me, "loop", str(args.problems), mode)
        ours = in_fresh_process(me, "codepeft", str(args.problems), str(args.batch_size), mode)
        result[mode] = {
            "loop_tokens_per_s": loop["tokens"] / loop["time_s"],
            "codepeft_tokens_per_s": ours["tokens"] / ours["time_s"],
            "loop_problems_per_s": args.problems / loop["time_s"],
            "codepeft_problems_per_s": args.problems / ours["time_s"],
            "speedup_tokens": (ours["tokens"] / ours["time_s"]) / (loop["tokens"] / loop["time_s"]),
            "speedup_problems": loop["time_s"] / ours["time_s"],
            "tokens_per_sample": ours["tokens"] / ours["samples"],
            "loop": loop,
            "codepeft": ours,
        }
    from codepeft.models.hardware import fast_cpu_bf16

    if fast_cpu_bf16():  # where bf16 is fast too: the same decoding in bf16 (`model.dtype: auto` there)
        bf16 = in_fresh_process(me, "codepeft", str(args.problems), str(args.batch_size), "fixed", "bf16")
        result["fixed"]["codepeft_bf16_tokens_per_s"] = bf16["tokens"] / bf16["time_s"]
    finish(result, args.out)


if __name__ == "__main__":
    main()
