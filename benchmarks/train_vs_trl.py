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

Peak memory is the process's resident set (sampled every 5 ms, glibc's mmap threshold fixed so
freed tensors leave it) above the resident set after imports, before the model is loaded: both
sides then hold the same model and data, and the difference is training's.

MFU (SmolLM2 only, where matrix products dominate): model FLOPs of the step (6 x parameters
per token for full fine-tuning, 4 x with a frozen base, output head at the tokens that carry a
loss, causal attention within each example) over the fp32 matmul peak measured in the same
process; with a profile of where the step's time goes.

    .venv/bin/python benchmarks/train_vs_trl.py --steps 30 --out trl.json      # ~25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, in_fresh_process, machine, run_worker  # noqa: E402
from train_throughput import attention_flops, matmul_peak  # noqa: E402

BATCH, LR, SEED, WINDOW = 8, 2e-4, 0, 5
# The data each model trains on: SmolLM2 on the smollm2 study's real data in its chat format,
# the default model on the offline stdlib-instruct pairs as in train_throughput.py.
DATA = {
    "smollm2-135m": ["data.train=[{source: conala}, {source: oasst-commitpackft}]", "data.format=chat",
                     "data.max_length=192"],
    "default": ["data.train=stdlib-instruct", "data.format=plain", "data.max_length=512"],
}  # fmt: skip


def _config(model: str, steps: int, method: str = "lora"):
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
            f"train.max_steps={steps}",
            f"train.batch_size={BATCH}",
            f"train.learning_rate={LR}",
            "train.lr_scheduler=linear",
            "train.warmup=0",
            "train.logging_steps=1",
            f"train.eval_steps={steps + 1}",
            f"train.save_steps={steps + 1}",
            f"seed={SEED}",
        ],
    )


class PeakRss:
    """The process's peak resident set above its value when started."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self.start = psutil.Process(), 0, 0

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self):
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        time.sleep(0.02)

    @property
    def above_start(self) -> int:
        return self.peak - self.start


def worker_trl(model: str, steps: int) -> dict:
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
        log: list[dict] = []

        class Timed(SFTTrainer):
            def training_step(self, model, inputs, num_items_in_batch=None):
                loss = super().training_step(model, inputs, num_items_in_batch)
                log.append({"time_s": time.perf_counter() - started, "tokens": int(inputs["input_ids"].numel())})
                return loss

        args = SFTConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=BATCH,
            max_steps=steps,
            learning_rate=LR,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=SEED,
            data_seed=SEED,
            use_cpu=True,
            disable_tqdm=True,
            padding_free=True,
            max_length=None,  # codepeft's encoding truncated already; TRL refuses max_length when padding-free
            bf16=False,
        )
        trainer = Timed(model=net, args=args, train_dataset=train_data, processing_class=tok)
        started = time.perf_counter()
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "losses": losses,
        "time_s": [s["time_s"] for s in log],
        "tokens": [s["tokens"] for s in log],
        "peak_rss": rss.above_start,
    }


def worker_codepeft(model: str, steps: int, method: str = "lora") -> dict:
    import torch

    from codepeft import train
    from codepeft.models.loading import resolve_name

    torch.set_num_threads(os.cpu_count() or 1)
    resolve_name(model)  # built on first use: not part of training's memory
    peak = matmul_peak()
    with PeakRss() as rss, tempfile.TemporaryDirectory() as tmp:
        result = train(_config(model, steps, method), Path(tmp) / "run")
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        info = json.loads((result.run_dir / "run.json").read_text())
    rows = [r for r in rows if "loss" in r]
    return {
        "losses": [r["loss"] for r in rows],
        "time_s": [r["time_s"] for r in rows],
        "train_tokens": result.cost["train_tokens"],
        "train_target_tokens": result.cost["train_target_tokens"],
        "peak_rss": rss.above_start,
        "peak_flops": max(peak, matmul_peak()),
        "logits": info["data"]["logits"],
        "precision": info["precision"],
    }


def worker_profile(model: str, method: str) -> dict:
    """Where one training step's time goes on `model` (torch.profiler, self CPU time by
    operator), and how fast its matrix products run on their own against the peak."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from codepeft.data import Collator, build_datasets
    from codepeft.methods import ApplyContext, get_method
    from codepeft.models.loading import load_model, resolve_name
    from codepeft.training.dropout import fast_dropout_enabled
    from codepeft.training.trainer import logits_at_targets
    from codepeft.training.varlen import varlen_attention_enabled

    config = _config(model, 3, method)
    net, tok = load_model(config.model.model_copy(update={"name_or_path": resolve_name(model)}))
    m = get_method(method)
    net = m.apply(net, m.options({}), ApplyContext(total_steps=3))
    net.config.use_cache = False
    net.train()
    data, _ = build_datasets(config.data, tok, False, config.seed)
    batch = Collator(tok.pad_token_id, flatten=True, boundaries=True)([data[i] for i in range(BATCH)])
    batch.pop("num_tokens")
    batch = logits_at_targets(batch)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=LR)

    def step():
        net(**batch).loss.backward()
        opt.step()
        opt.zero_grad()

    with varlen_attention_enabled(net), fast_dropout_enabled(net):
        step()
        peak = matmul_peak()
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            for _ in range(3):
                step()
        peak = max(peak, matmul_peak())
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmuls = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
    matmul_us = sum(e.self_cpu_time_total for e in matmuls)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {
        "top": [{"op": e.key, "share": e.self_cpu_time_total / total} for e in top],
        "matmul_share": matmul_us / total,
        "matmul_efficiency": sum(e.flops for e in matmuls) / (matmul_us * 1e-6) / peak,
    }


def flops_per_token(model: str, method: str) -> tuple[float, float, dict]:
    """(training FLOPs per token of the body, of the output head; the model's dims)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from codepeft.models.loading import resolve_name

    cfg = AutoConfig.from_pretrained(resolve_name(model))
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(cfg)
    head = net.get_output_embeddings()
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    body = sum(m.weight.numel() for m in linear if m is not head)
    factor = 6.0 if method == "full" else 4.0
    dims = {"layers": cfg.get_text_config().num_hidden_layers, "width": cfg.get_text_config().hidden_size}
    return factor * body, factor * head.weight.numel(), dims


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
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # freed tensors leave the resident set
    me = Path(__file__)
    result: dict = {"machine": machine(), "models": {}}
    for model in args.models.split(","):
        trl = in_fresh_process(me, "trl", model, str(args.steps))
        ours = in_fresh_process(me, "codepeft", model, str(args.steps))
        row = compare(trl, ours)
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
