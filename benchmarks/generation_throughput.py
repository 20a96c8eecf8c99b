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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, in_fresh_process, machine, run_worker  # noqa: E402

N, TEMPERATURE, TOP_P, MAX_NEW = 20, 0.2, 0.95, 128


def _setup(problems: int, mode: str, dtype: str = "fp32"):
    from codepeft.config import ModelSpec
    from codepeft.models.loading import load_model
    from codepeft.tasks import get_task
    from codepeft.tasks.base import render_prompt

    model, tok = load_model(ModelSpec(name_or_path="default", dtype=dtype, device="cpu"))
    task = get_task("humaneval")
    items = task.problems()[:problems]
    stop = task.stop
    if mode == "fixed":
        model.generation_config.suppress_tokens = [tok.eos_token_id]
        stop = []
    return model, tok, [render_prompt(task.prompt(p), "plain", tok) for p in items], stop


def _useful_tokens(tok, completions: list[list[str]]) -> int:
    return sum(len(tok(c, add_special_tokens=False)["input_ids"]) for samples in completions for c in samples)


def worker_codepeft(problems: int, batch: int, mode: str, dtype: str = "fp32") -> dict:
    from codepeft.generation import GenerationSettings
    from codepeft.generation.backends import HFBackend

    model, tok, prompts, stop = _setup(problems, mode, dtype)
    settings = GenerationSettings(
        n=N, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=MAX_NEW, batch_size=batch, stop=stop
    )
    backend = HFBackend(model, tok)
    started = time.perf_counter()
    out = backend.generate(prompts, settings, progress=False)
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "tokens": _useful_tokens(tok, out), "samples": sum(len(s) for s in out)}


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
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, {"codepeft": worker_codepeft, "loop": worker_loop})
    me = Path(__file__)
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
