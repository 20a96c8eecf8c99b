"""Training throughput: codepeft vs the two studies' recipe, same model, data, method and batches.

The recipe (as in the studies' scripts): `transformers.Trainer` + `peft` LoRA, every example
padded to the maximum length (512, the default model's context), fp32, batch 8. codepeft: the
same examples through `codepeft.train`, whose default batches lay the examples of a batch end
to end in one row (no padding, no attention across examples). Both runs see the same examples
in the same order (same encoded dataset, same sampler seed), so their loss curves can be
compared step by step (= at equal tokens).

Reported: useful (non-padding) tokens per second, time to reach the recipe's final loss, the
largest difference of the two loss curves (means over windows of 10 steps), and model FLOPs
utilisation (MFU) of codepeft's training step against this machine's measured fp32 matmul
peak, with a profile of where the step's time goes.

    .venv/bin/python benchmarks/train_throughput.py --steps 60 --out train.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import finish, in_fresh_process, machine, run_worker  # noqa: E402

MAX_LENGTH, BATCH, LR, SEED = 512, 8, 2e-4, 0
WINDOW = 10


def _config(steps: int, method: str = "lora", batches: str = "batch", dtype: str = "fp32"):
    from codepeft import load_config

    packing = {"batch": "batch", "padded": "false"}[batches]
    return load_config(
        None,
        [
            "model.name_or_path=default",
            f"model.dtype={dtype}",
            f"method.name={method}",
            "data.train=stdlib-instruct",
            "data.format=plain",
            "data.loss_on=response",
            f"data.max_length={MAX_LENGTH}",
            f"data.packing={packing}",
            *train_overrides(steps),
        ],
    )


def train_overrides(steps: int) -> list[str]:
    """codepeft's side of `trainer_arguments`: steps, batch, schedule, a log line every step."""
    return [
        f"train.max_steps={steps}",
        f"train.batch_size={BATCH}",
        f"train.learning_rate={LR}",
        "train.lr_scheduler=linear",
        "train.warmup=0",
        "train.logging_steps=1",
        f"train.eval_steps={steps + 1}",
        f"train.save_steps={steps + 1}",
        f"seed={SEED}",
    ]


def _dataset(config):
    from codepeft.data import build_datasets
    from codepeft.models.loading import load_tokenizer, resolve_name

    tok = load_tokenizer(resolve_name("default"))
    train, _ = build_datasets(config.data, tok, False, config.seed)
    return train, tok


def trainer_arguments(steps: int) -> dict:
    """The Trainer settings codepeft's own training uses here (optimizer, schedule, clipping,
    sampler seed), for the references built on transformers' Trainer."""
    return dict(
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
    )


def worker_recipe(steps: int) -> dict:
    """The studies' recipe, written as their scripts do (no codepeft in the training path)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, default_data_collator

    from codepeft.models.loading import resolve_name

    config = _config(steps)
    encoded, tok = _dataset(config)

    def pad(ex):
        n = len(ex["input_ids"])
        return {
            "input_ids": ex["input_ids"] + [tok.pad_token_id] * (MAX_LENGTH - n),
            "attention_mask": [1] * n + [0] * (MAX_LENGTH - n),
            "labels": ex["labels"] + [-100] * (MAX_LENGTH - n),
        }

    data = encoded.map(pad)
    model = AutoModelForCausalLM.from_pretrained(resolve_name("default"), dtype=torch.float32)
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["c_attn", "c_proj", "c_fc"]
    )
    model = get_peft_model(model, lora)
    args = TrainingArguments(**trainer_arguments(steps))
    run = timed_training(
        Trainer, lambda inputs: int(inputs["attention_mask"].sum()),
        model=model, args=args, train_dataset=data, data_collator=default_data_collator,
    )  # fmt: skip
    return {**run, "slots": BATCH * MAX_LENGTH}


def timed_training(trainer_cls, useful_tokens, **kwargs) -> dict:
    """Train with `trainer_cls(**kwargs)`, recording after every step the time since the start
    and the batch's useful tokens; returns the logged losses with both."""
    log: list[dict] = []

    class Timed(trainer_cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            log.append({"time_s": time.perf_counter() - started, "tokens": useful_tokens(inputs)})
            return loss

    trainer = Timed(**kwargs)
    started = time.perf_counter()
    trainer.train()
    return {
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "time_s": [s["time_s"] for s in log],
        "tokens": [s["tokens"] for s in log],
    }


def worker_codepeft(steps: int, method: str = "lora", batches: str = "batch", dtype: str = "fp32") -> dict:
    """codepeft's training; the machine's matmul peak for the dtype the run computes in (bf16 under
    autocast) is measured in the same process just before and after (the higher is kept: a shared
    machine's neighbours only ever lower it)."""
    from codepeft.models.hardware import resolve_dtype

    compute = resolve_dtype(dtype, "cpu")[0]  # with mixed precision auto, bf16 weights mean bf16 matmuls
    peak = matmul_peak(compute)
    run = codepeft_run(_config(steps, method, batches, dtype))
    return {**run, "peak_flops": max(peak, matmul_peak(compute))}


def codepeft_run(config) -> dict:
    """`codepeft.train` in a temporary directory: its per-step losses and times, and its cost."""
    from codepeft import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Path(tmp) / "run")
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        info = json.loads((result.run_dir / "run.json").read_text())
    rows = [r for r in rows if "loss" in r]
    return {
        "losses": [r["loss"] for r in rows],
        "time_s": [r["time_s"] for r in rows],
        "train_tokens": result.cost["train_tokens"],
        "train_target_tokens": result.cost["train_target_tokens"],
        "logits": info["data"]["logits"],
        "wall_time_s": result.cost["wall_time_s"],
        "batches": info["data"]["batches"],
        "attention": info["data"]["attention"],
        "precision": info["precision"],
    }


def matmul_peak(dtype: str = "fp32") -> float:
    """This machine's matmul FLOP/s in `dtype`: the best of square matmuls from 512 to 2048."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    best = 0.0
    for n in (512, 1024, 1536, 2048):
        a, b = torch.randn(n, n, dtype=torch_dtype), torch.randn(n, n, dtype=torch_dtype)
        for _ in range(2):
            a @ b
        for _ in range(3):
            reps = max(3, int(2e10 / (2 * n**3)))
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def worker_profile(method: str) -> dict:
    """Where one training step's time goes (torch.profiler, CPU time by operator), and how
    fast the step's matrix products run on their own against the machine's peak: the ceiling
    on MFU if everything else took no time."""
    return profile_first_batch(_config(3, method), "default", method)


def profile_first_batch(config, model_name: str, method: str) -> dict:
    """`profile_step` on the first batch of `config`'s data, as codepeft's training lays it out."""
    from codepeft.data import Collator, build_datasets
    from codepeft.methods import ApplyContext, get_method
    from codepeft.models.loading import load_model, resolve_name
    from codepeft.training.trainer import chunked_causal_loss

    path = resolve_name(model_name)
    model, tok = load_model(config.model.model_copy(update={"name_or_path": path}))
    m = get_method(method)
    model = m.apply(model, m.options({}), ApplyContext(tokenizer_path=path, total_steps=3))
    model.config.use_cache = False
    model.train()
    data, _ = build_datasets(config.data, tok, False, config.seed)
    batch = Collator(tok.pad_token_id, flatten=True, boundaries=True)([data[i] for i in range(BATCH)])
    batch.pop("num_tokens")
    return profile_step(model, lambda: chunked_causal_loss(model, batch, config.train.loss_chunk))


def profile_step(model, loss) -> dict:
    """Profile three AdamW steps of `model` with codepeft's training kernels (attention,
    dropout, LoRA) and `loss()`, codepeft's chunked loss on a batch: the top operators by self CPU time,
    the share of matrix products and their efficiency against the machine's peak measured around
    them."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from codepeft.allocator import TRAINING, retain_freed_memory
    from codepeft.training.runner import training_kernels

    retain_freed_memory(TRAINING)  # as codepeft's training sets it on a CPU
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)

    def step():
        loss().backward()
        opt.step()
        opt.zero_grad()

    with training_kernels(model):
        for _ in range(3):  # glibc's heap grows to the step's size first (fresh pages fault in meanwhile)
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


def model_flops_per_token(method: str, model_name: str = "default") -> tuple[float, float, int]:
    """(training FLOPs per token of the body, of the output head; matmul parameters): 6 per
    parameter for full fine-tuning (forward 2, two backward matmuls 4), 4 with a frozen base (no
    weight gradients); adapters' own FLOPs ignored (under 1% here). Attention score FLOPs are
    added per example in `attention_flops`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from codepeft.models.loading import resolve_name

    cfg = AutoConfig.from_pretrained(resolve_name(model_name))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    head = model.get_output_embeddings()
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    body = sum(m.weight.numel() for m in linear if m is not head)
    factor = 6.0 if method == "full" else 4.0
    return factor * body, factor * head.weight.numel(), body + head.weight.numel()


def attention_flops(lengths: list[int], layers: int, width: int, method: str) -> float:
    """Scores and weighted sum of causal attention within each example: 2 matmuls of
    len*(len+1)/2*width multiply-adds per layer forward; x3 with backward (x2 without weight grads
    there is no difference: both operands are activations)."""
    fwd = sum(2 * 2 * (n * (n + 1) / 2) * width for n in lengths) * layers
    return 3 * fwd


def summarise(recipe: dict, ours: dict, full: dict, profile: dict) -> dict:
    import numpy as np
    from transformers import AutoConfig

    from codepeft.models.loading import resolve_name

    steps = min(len(recipe["losses"]), len(ours["losses"]))
    useful = sum(recipe["tokens"][:steps])
    recipe_tps = useful / recipe["time_s"][steps - 1]
    ours_tps = ours["train_tokens"] / ours["time_s"][steps - 1] if ours["time_s"] else float("nan")

    def windows(losses):
        arr = np.asarray(losses[:steps])
        return [arr[i : i + WINDOW].mean() for i in range(0, steps - WINDOW + 1, WINDOW)]

    rw, ow = windows(recipe["losses"]), windows(ours["losses"])
    curve_diff = max(abs(a - b) / a for a, b in zip(rw, ow, strict=True))
    target = rw[-1]

    def time_to(losses, times):
        arr = np.asarray(losses[:steps])
        for i in range(WINDOW - 1, steps):
            if arr[i - WINDOW + 1 : i + 1].mean() <= target:
                return times[i]
        return float("nan")

    cfg = AutoConfig.from_pretrained(resolve_name("default"))
    flops = {}
    for label, run in (("lora", ours), ("full", full)):
        body, head, n_params = model_flops_per_token(label)
        tokens = run["train_tokens"]
        # The output head's FLOPs count only where logits are needed (the tokens that carry a
        # loss), as codepeft computes them nowhere else; `mfu_every_token` is the usual count.
        targets = run["train_target_tokens"]
        # attention: every example's own causal square (the mean length of an example times tokens)
        mean_len = useful / (steps * BATCH)
        attn = attention_flops([mean_len] * int(tokens / mean_len), cfg.n_layer, cfg.n_embd, label)
        seconds = run["time_s"][-1]
        achieved = (body * tokens + head * targets + attn) / seconds
        flops[label] = {
            "achieved_flops": achieved,
            "peak_flops": run["peak_flops"],
            "mfu": achieved / run["peak_flops"],
            "mfu_every_token": ((body + head) * tokens + attn) / seconds / run["peak_flops"],
            "target_share": targets / tokens,
            "matmul_params": n_params,
            "logits": run["logits"],
        }
    return {
        "steps": steps,
        "useful_tokens": useful,
        "padding_share_recipe": 1 - useful / (steps * recipe["slots"]),
        "recipe_tokens_per_s": recipe_tps,
        "codepeft_tokens_per_s": ours_tps,
        "speedup": ours_tps / recipe_tps,
        "recipe_time_to_loss_s": time_to(recipe["losses"], recipe["time_s"]),
        "codepeft_time_to_loss_s": time_to(ours["losses"], ours["time_s"]),
        "target_loss": float(target),
        "loss_curve_max_rel_diff": float(curve_diff),
        "codepeft_batches": f"{ours['batches']}, attention {ours['attention']}",
        "mfu": flops,
        "profile": profile["lora"]["top"],
        "matmul": {k: {"share": v["matmul_share"], "efficiency": v["matmul_efficiency"]} for k, v in profile.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        return run_worker(
            args.worker, {"recipe": worker_recipe, "codepeft": worker_codepeft, "profile": worker_profile}
        )
    me = Path(__file__)
    recipe = in_fresh_process(me, "recipe", str(args.steps))
    ours = in_fresh_process(me, "codepeft", str(args.steps))
    full = in_fresh_process(me, "codepeft", str(max(10, args.steps // 4)), "full")
    profile = {m: in_fresh_process(me, "profile", m) for m in ("lora", "full")}
    summary = summarise(recipe, ours, full, profile)
    from codepeft.models.hardware import fast_cpu_bf16

    if fast_cpu_bf16():  # where bf16 is fast too, measure it: tokens/s and MFU against the bf16 peak
        summary["bf16"] = bf16_summary(in_fresh_process(me, "codepeft", str(args.steps), "lora", "batch", "bf16"))
    finish({"machine": machine(), **summary}, args.out)


def bf16_summary(run: dict) -> dict:
    body, head, _ = model_flops_per_token("lora")
    seconds = run["time_s"][-1]
    achieved = (body * run["train_tokens"] + head * run["train_target_tokens"]) / seconds
    return {
        "precision": run["precision"],
        "tokens_per_s": run["train_tokens"] / seconds,
        "final_loss": run["losses"][-1],
        "peak_flops": run["peak_flops"],
        "mfu_without_attention": achieved / run["peak_flops"],
    }


if __name__ == "__main__":
    main()
