"""Training: codepeft against TRL's SFTTrainer, the tool practitioners use today, on the real
SmolLM2-135M (Llama architecture, vocabulary 49,152) and on the offline default model; with the
training step's MFU on SmolLM2 for LoRA and full fine-tuning.

Both sides train the same LoRA (codepeft's, applied to the same fp32 model and handed to
`SFTTrainer` as a `PeftModel`) on the same encoded examples (codepeft's encoding: prompt tokens
masked with -100), batch 8, same optimizer, schedule and sampler seed, so every step sees the
same eight examples and the loss curves compare step by step (= at equal tokens).

TRL's configuration is its best that works on a CPU: `padding_free=True` (a batch's examples end
to end in one row, no padding; TRL's collator marks each example's start with position_ids and
passes its boundaries), completion-only loss (the `labels` column), and its fused LM head that
computes log-probabilities in chunks without materialising the logits. Its `packing=True`
(`bfd`) changes which examples share a step, so it would not give comparable curves, and it is
the same padding-free path per row. Not used on CPU: Liger kernels and FlashAttention (CUDA
only).

TRL's `SFTConfig` turns gradient checkpointing on by default; both sides are measured with it
and both without it. Neither computes a held-out loss.

Peak memory is the process's resident set (sampled every 5 ms) above the resident set after
imports, before the model is loaded: both sides then hold the same model and data, and the
difference is training's. Both run with the allocator as a user's process has it (no MALLOC_
variables: TRL on glibc's defaults, codepeft with the setting its training applies,
`codepeft.allocator`, which keeps freed memory for the next step): fixing glibc's
mmap threshold low (so that freed tensors leave the resident set at once) turns every large
tensor into fresh pages to fault in, and halved both sides' speed here (codepeft's LoRA step on
SmolLM2: 93 against 164 tokens/s, a third of the step in the kernel).

MFU (SmolLM2 only, where matrix products dominate): model FLOPs of the step (6 x parameters
per token for full fine-tuning, 4 x with a frozen base, output head at the tokens that carry a
loss, causal attention within each example) over the fp32 matmul peak measured in the same
process; with a profile of where the step's time goes.

    .venv/bin/python benchmarks/train_vs_trl.py --steps 12 --out trl.json      # ~15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakRss, finish, in_fresh_process, machine, run_worker  # noqa: E402
from train_throughput import (  # noqa: E402
    BATCH,
    attention_flops,
    codepeft_run,
    matmul_peak,
    model_flops_per_token,
    profile_first_batch,
    timed_training,
    train_overrides,
    trainer_arguments,
)

WINDOW = 5  # batch, learning rate, seed and Trainer settings: those of train_throughput.py
# The data each model trains on: SmolLM2 on the smollm2 study's real data in its chat format,
# the default model on the offline stdlib-instruct pairs as in train_throughput.py.
DATA = {
    "smollm2-135m": ["data.train=[{source: conala}, {source: oasst-commitpackft}]", "data.format=chat",
                     "data.max_length=192"],
    "default": ["data.train=stdlib-instruct", "data.format=plain", "data.max_length=512"],
}  # fmt: skip


def _config(model: str, steps: int, method: str = "lora", checkpointing: bool = False):
    from codepeft import load_config

    return load_config(
        None,
        [
            f"model.name_or_path={model}",
            "model.dtype=fp32",
            f"method.name={method}",
            *DATA[model],
            "data.loss_on=response",
            "data.packing=batch",
            "data.eval_limit=0",  # no held-out loss: TRL is given no held-out set either
            *train_overrides(steps),
            f"train.gradient_checkpointing={str(checkpointing).lower()}",
        ],
    )


def worker_trl(model: str, steps: int, checkpointing: str = "on") -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from codepeft.data import build_datasets
    from codepeft.methods import ApplyContext, get_method
    from codepeft.models.loading import load_model, resolve_name

    torch.set_num_threads(os.cpu_count() or 1)
    path = resolve_name(model)  # built on first use: not part of training's memory
    with PeakRss() as rss:
        config = _config(model, steps)
        net, tok = load_model(config.model.model_copy(update={"name_or_path": path}))
        train_data, _ = build_datasets(config.data, tok, False, config.seed)
        m = get_method("lora")
        net = m.apply(net, m.options({}), ApplyContext())
        args = SFTConfig(
            **trainer_arguments(steps),
            padding_free=True,
            max_length=None,  # codepeft's encoding truncated already; TRL refuses max_length when padding-free
            bf16=False,
            gradient_checkpointing=checkpointing == "on",  # TRL's default: on
        )
        run = timed_training(
            SFTTrainer, lambda inputs: int(inputs["input_ids"].numel()),  # one row, no padding
            model=net, args=args, train_dataset=train_data, processing_class=tok,
        )  # fmt: skip
    return {
        **run,
        "peak_rss": rss.above_start,
    }


def worker_codepeft(model: str, steps: int, method: str = "lora", checkpointing: str = "off") -> dict:
    import torch

    from codepeft.models.loading import resolve_name

    torch.set_num_threads(os.cpu_count() or 1)
    resolve_name(model)  # built on first use: not part of training's memory
    peak = matmul_peak()
    with PeakRss() as rss:
        run = codepeft_run(_config(model, steps, method, checkpointing == "on"))
    return {**run, "peak_rss": rss.above_start, "peak_flops": max(peak, matmul_peak())}


def worker_profile(model: str, method: str) -> dict:
    """Where one training step's time goes on `model` (torch.profiler, self CPU time by
    operator), and how fast its matrix products run on their own against the peak."""
    return profile_first_batch(_config(model, 3, method), model, method)


def flops_per_token(model: str, method: str) -> tuple[float, float, dict]:
    """(training FLOPs per token of the body, of the output head; the model's dims)."""
    from transformers import AutoConfig

    from codepeft.models.loading import resolve_name

    body, head, _ = model_flops_per_token(method, model)
    text = AutoConfig.from_pretrained(resolve_name(model)).get_text_config()
    return body, head, {"layers": text.num_hidden_layers, "width": text.hidden_size}


def mfu(model: str, method: str, run: dict, mean_len: float) -> dict:
    body, head, dims = flops_per_token(model, method)
    tokens, targets, seconds = run["train_tokens"], run["train_target_tokens"], run["time_s"][-1]
    attn = attention_flops([mean_len] * int(tokens / mean_len), dims["layers"], dims["width"], method)
    achieved = (body * tokens + head * targets + attn) / seconds
    return {
        "tokens_per_s": tokens / seconds,
        "achieved_flops": achieved,
        "peak_flops": run["peak_flops"],
        "mfu": achieved / run["peak_flops"],
        "mfu_every_token": ((body + head) * tokens + attn) / seconds / run["peak_flops"],
        "target_share": targets / tokens,
    }


def compare(trl: dict, ours: dict) -> dict:
    import numpy as np

    steps = min(len(trl["losses"]), len(ours["losses"]))
    tokens = sum(trl["tokens"][:steps])

    def windows(losses):
        arr = np.asarray(losses[:steps])
        return [arr[i : i + WINDOW].mean() for i in range(0, steps - WINDOW + 1, WINDOW)]

    tw, ow = windows(trl["losses"]), windows(ours["losses"])
    trl_tps = tokens / trl["time_s"][steps - 1]
    ours_tps = ours["train_tokens"] / ours["time_s"][-1]
    return {
        "steps": steps,
        "tokens": tokens,
        "codepeft_tokens": ours["train_tokens"],
        "trl_tokens_per_s": trl_tps,
        "codepeft_tokens_per_s": ours_tps,
        "speedup": ours_tps / trl_tps,
        "trl_peak_mb": trl["peak_rss"] / 2**20,
        "codepeft_peak_mb": ours["peak_rss"] / 2**20,
        "memory_ratio": ours["peak_rss"] / trl["peak_rss"],
        "loss_curve_max_rel_diff": float(max(abs(a - b) / a for a, b in zip(tw, ow, strict=True))),
        "trl_final_loss": float(tw[-1]),
        "codepeft_final_loss": float(ow[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default="smollm2-135m,default")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, {"trl": worker_trl, "codepeft": worker_codepeft, "profile": worker_profile})
    me = Path(__file__)
    result: dict = {"machine": machine(), "models": {}}
    for model in args.models.split(","):
        # TRL's default trains with gradient checkpointing: both sides with it, then both without
        runs = {
            ck: (in_fresh_process(me, "trl", model, str(args.steps), ck),
                 in_fresh_process(me, "codepeft", model, str(args.steps), "lora", ck))
            for ck in ("on", "off")
        }  # fmt: skip
        row = {**compare(*runs["on"]), "without_checkpointing": compare(*runs["off"])}
        ours = runs["off"][1]  # MFU: model FLOPs without the recomputation
        if model == "smollm2-135m":
            mean_len = row["tokens"] / (row["steps"] * BATCH)
            full = in_fresh_process(me, "codepeft", model, str(max(6, args.steps // 3)), "full")
            row["mfu"] = {"lora": mfu(model, "lora", ours, mean_len), "full": mfu(model, "full", full, mean_len)}
            row["profile"] = {m: in_fresh_process(me, "profile", model, m) for m in ("lora", "full")}
        result["models"][model] = row
        print(json.dumps({model: row}), flush=True)
    finish(result, args.out)


if __name__ == "__main__":
    main()
