"""The checks only a CUDA GPU can answer, run by `benchmarks/gpu.sh` (which installs what they need);
`--dry-run` runs the same code on the CPU with a tiny model so the script is tested without a GPU.

- **training**: every method the estimator is held to (full, LoRA, QLoRA, (IA)3, P-tuning,
  prompt, prefix, Houlsby, Pfeiffer, parallel) trains three AdamW steps on SmolLM2-135M in bf16
  (autocast, fp32 trainable weights, as `codepeft train` does), each in a fresh process:
  tokens/s and CUDA's max allocated memory against `codepeft estimate` for the same run (the CUDA
  context is not in max allocated, so it is left out of the estimate too). QLoRA vs LoRA memory
  falls out of the same rows.
- **vllm**: HumanEval greedy completions of SmolLM2 by vLLM (in its own environment: vLLM pins
  its own torch and transformers) against codepeft's Hugging Face backend on the same GPU: the
  same text, and tokens/s.

    .venv/bin/python benchmarks/gpu_checks.py --dry-run --out gpu.json        # CPU, ~1 minute
    .venv/bin/python benchmarks/gpu_checks.py --out gpu.json [--vllm-python .venv-vllm/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, PeakRss, finish, in_fresh_process, machine, markdown_table, run_worker  # noqa: E402

METHODS = ["full", "lora", "qlora", "ia3", "ptuning", "prompt", "prefix", "adapter_houlsby", "adapter_pfeiffer",
           "adapter_parallel"]  # fmt: skip
GPU = {"model": "smollm2-135m", "batch": 4, "seq": 512, "dtype": "bf16", "problems": 20}
DRY = {"batch": 2, "seq": 64, "dtype": "fp32", "problems": 2}
STEPS = 3
MARK = "<!-- gpu checks: written by benchmarks/gpu.sh -->"


def worker_train(path: str, method: str, device: str, dtype: str, batch: int, seq: int) -> dict:
    """Three AdamW steps of `method` on random tokens; peak memory and tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from codepeft.methods import ApplyContext, get_method

    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    m = get_method(method)
    options = m.options({})
    kwargs: dict = {"dtype": torch.float32 if method == "full" else torch_dtype}  # full: fp32 master weights
    if m.requires_quantization:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )  # fmt: skip
    rss = PeakRss().start() if device == "cpu" else None  # the dry run's yardstick
    model = AutoModelForCausalLM.from_pretrained(path, device_map={"": device}, **kwargs)
    model = m.apply(model, options, ApplyContext(quantized=m.requires_quantization, tokenizer_path=path))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    torch.manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device, dtype=torch_dtype, enabled=dtype != "fp32")
    times = []
    for _ in range(STEPS):
        started = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else rss.stop()
    return {"peak_bytes": peak, "tokens_per_s": batch * seq / min(times[1:]), "loss": float(loss)}


def training(path: str, device: str, cfg: dict) -> list[dict]:
    from codepeft.estimate import estimate

    rows = []
    for method in METHODS:
        args = (path, method, device, cfg["dtype"], str(cfg["batch"]), str(cfg["seq"]))
        try:
            run = in_fresh_process(Path(__file__), "train", *args, timeout=600)
        except RuntimeError as err:
            rows.append({"method": method, "error": str(err).strip().splitlines()[-1][:200]})
            continue
        est = estimate(path, method, seq_len=cfg["seq"], batch=cfg["batch"], dtype=cfg["dtype"], device=device,
                       loss_chunk=0)  # fmt: skip
        predicted = est.peak_bytes - est.runtime_bytes  # max allocated holds no CUDA context
        rows.append({
            "method": method,
            "trainable": est.trainable_params,
            "measured_mb": run["peak_bytes"] / 2**20,
            "estimated_mb": predicted / 2**20,
            "error_%": 100 * (predicted - run["peak_bytes"]) / run["peak_bytes"],
            "tokens_per_s": run["tokens_per_s"],
            "loss": run["loss"],
        })  # fmt: skip
    return rows


def worker_hf_greedy(path: str, prompts_file: str, device: str, dtype: str) -> dict:
    from codepeft.config import ModelSpec
    from codepeft.generation import GenerationSettings
    from codepeft.generation.backends import HFBackend
    from codepeft.models.loading import load_model

    job = json.loads(Path(prompts_file).read_text())
    model, tok = load_model(ModelSpec(name_or_path=path, dtype=dtype, device=device))
    settings = GenerationSettings(n=1, temperature=0.0, max_new_tokens=job["max_new_tokens"], batch_size=32,
                                  stop=job["stop"])  # fmt: skip
    started = time.perf_counter()
    texts = HFBackend(model, tok).generate(job["prompts"], settings, progress=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(tok(t[0], add_special_tokens=False)["input_ids"]) for t in texts)
    return {"texts": [t[0] for t in texts], "tokens_per_s": tokens / elapsed}


# Run by vLLM's own interpreter (no codepeft there): prompts in, greedy texts and tokens/s out.
VLLM_SCRIPT = r"""
import json, sys, time
from vllm import LLM, SamplingParams
job = json.load(open(sys.argv[2]))
llm = LLM(model=sys.argv[1], dtype=sys.argv[3], seed=0)
params = SamplingParams(temperature=0.0, max_tokens=job["max_new_tokens"], stop=job["stop"] or None)
started = time.perf_counter()
outs = llm.generate(job["prompts"], params, use_tqdm=False)
elapsed = time.perf_counter() - started
texts = [o.outputs[0].text for o in outs]
print(json.dumps({"texts": texts, "tokens_per_s": sum(len(o.outputs[0].token_ids) for o in outs) / elapsed}))
"""


def generation(path: str, device: str, cfg: dict, vllm_python: str | None) -> dict:
    from codepeft.generation.backends import truncate_at_stop
    from codepeft.tasks import get_task
    from codepeft.tasks.base import render_prompt

    task = get_task("humaneval")
    prompts = [render_prompt(task.prompt(p), "plain", None) for p in task.problems()[: cfg["problems"]]]
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "prompts.json"
        job.write_text(json.dumps({"prompts": prompts, "stop": task.stop, "max_new_tokens": 128}))
        hf = in_fresh_process(Path(__file__), "hf_greedy", path, str(job), device, cfg["dtype"])
        if vllm_python is None:
            return {"hf_tokens_per_s": hf["tokens_per_s"], "vllm": "not run: no vLLM environment (CPU dry run)"}
        dtype = {"bf16": "bfloat16", "fp32": "float32"}[cfg["dtype"]]
        out = subprocess.run([vllm_python, "-c", VLLM_SCRIPT, path, str(job), dtype], capture_output=True, text=True,
                             timeout=900, cwd=ROOT)  # fmt: skip
        if out.returncode != 0:
            return {"hf_tokens_per_s": hf["tokens_per_s"], "vllm": f"failed: {out.stderr.strip()[-500:]}"}
        vllm = json.loads(out.stdout.strip().splitlines()[-1])
    same = sum(truncate_at_stop(v, task.stop) == h for v, h in zip(vllm["texts"], hf["texts"], strict=True))
    return {
        "hf_tokens_per_s": hf["tokens_per_s"],
        "vllm_tokens_per_s": vllm["tokens_per_s"],
        "speedup": vllm["tokens_per_s"] / hf["tokens_per_s"],
        "same_greedy_outputs": same,
        "outputs": len(prompts),
    }


def section(result: dict) -> str:
    """RESULTS.md's GPU section."""
    m = result["machine"]
    cfg = result["settings"]
    lines = [
        MARK,
        "## GPU checks",
        "",
        (
            "`bash benchmarks/gpu.sh --dry-run` (the CPU and a tiny model: the script tested, no GPU measured)"
            if result["dry_run"]
            else "`bash benchmarks/gpu.sh`"
        )
        + f" on {m['date']}: {m['gpu'] or m['cpu']}; {cfg['model']}, batch {cfg['batch']} x {cfg['seq']} tokens,"
        f" {cfg['dtype']}, {STEPS} AdamW steps per method in a fresh process. Memory: "
        + ("CUDA max allocated" if not result["dry_run"] else "peak RSS above the start")
        + " against `codepeft estimate` for the same run (without the CUDA context).",
        "",
    ]
    rows = [
        [r["method"], "failed: " + r["error"], "", "", "", ""] if "error" in r else
        [r["method"], f"{r['trainable']:,}", f"{r['measured_mb']:,.0f}", f"{r['estimated_mb']:,.0f}",
         f"{r['error_%']:+.1f}", f"{r['tokens_per_s']:,.0f}"]
        for r in result["training"]
    ]  # fmt: skip
    lines += [markdown_table(["method", "trainable", "measured MB", "estimated MB", "error %", "tokens/s"], rows), ""]
    ok = [r for r in result["training"] if "error" not in r]
    within = sum(abs(r["error_%"]) <= 10 for r in ok)
    lines += [f"Estimate within 10% of measured: {within}/{len(result['training'])}.", ""]
    by = {r["method"]: r for r in ok}
    if "lora" in by and "qlora" in by:
        lines += [f"QLoRA / LoRA peak memory: {by['qlora']['measured_mb'] / by['lora']['measured_mb']:.2f}x.", ""]
    g = result["generation"]
    if "vllm_tokens_per_s" in g:
        lines.append(
            f"Greedy HumanEval ({g['outputs']} problems, 128 tokens at most): vLLM {g['vllm_tokens_per_s']:,.0f}"
            f" tokens/s, codepeft's HF backend {g['hf_tokens_per_s']:,.0f} ({g['speedup']:.2f}x);"
            f" {g['same_greedy_outputs']}/{g['outputs']} completions identical."
        )
    else:
        lines.append(f"Greedy HumanEval: HF backend {g['hf_tokens_per_s']:,.0f} tokens/s; vLLM {g['vllm']}.")
    return "\n".join(lines) + "\n"


def read_section(results_md: Path) -> str | None:
    """RESULTS.md's GPU section as `write_section` wrote it, or None."""
    text = results_md.read_text() if results_md.is_file() else ""
    if MARK not in text:
        return None
    body = text.split(MARK, 1)[1].split("\n## ", 2)
    return MARK + "\n## ".join(body[:2]).rstrip("\n") + "\n"


def write_section(results_md: Path, text: str) -> None:
    """Replace RESULTS.md's GPU section (from its marker to the next top-level section or the end)."""
    old = results_md.read_text() if results_md.is_file() else ""
    if MARK in old:
        head, rest = old.split(MARK, 1)
        tail = rest.split("\n## ", 2)
        after = "\n## " + tail[2] if len(tail) > 2 else ""
        old = head.rstrip("\n") + "\n\n" + text + after
    else:
        old = old.rstrip("\n") + "\n\n" + text
    results_md.write_text(old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+")
    parser.add_argument("--dry-run", action="store_true", help="CPU and a tiny model: test the script")
    parser.add_argument("--model", help="a model directory (dry run: a tiny model built here)")
    parser.add_argument("--vllm-python", help="the interpreter of the environment vLLM is installed in")
    parser.add_argument("--results", type=Path, help="write the GPU section into this RESULTS.md")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, {"train": worker_train, "hf_greedy": worker_hf_greedy})
    import torch

    from codepeft.models.builtin import resolve_name

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --dry-run to test the script on the CPU")
    cfg = {**GPU, **(DRY if args.dry_run else {})}
    device = "cpu" if args.dry_run else "cuda"
    path = args.model or resolve_name(cfg["model"])
    cfg["model"] = Path(path).name if args.model else cfg["model"]
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    result = {
        "machine": machine(),
        "dry_run": args.dry_run,
        "settings": cfg,
        "training": training(path, device, cfg),
        "generation": generation(path, device, cfg, args.vllm_python),
    }
    if args.results:
        write_section(args.results, section(result))
    finish(result, args.out)


if __name__ == "__main__":
    main()
