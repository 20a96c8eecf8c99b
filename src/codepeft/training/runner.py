"""`train(config)`: load, apply the method, train with transformers.Trainer, record everything."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from codepeft.config import RunConfig
from codepeft.data import Collator, build_datasets
from codepeft.errors import CodepeftError
from codepeft.methods import ApplyContext, count_parameters, get_method
from codepeft.methods.apply import check_combination
from codepeft.models.hardware import resolve_dtype
from codepeft.models.loading import context_limit, load_config, load_model, resolve_device, resolve_name
from codepeft.training.artifacts import last_good_checkpoint, save_weights
from codepeft.training.callbacks import AdaLoraSchedule, CheckpointManifest, MetricsLog
from codepeft.training.cost import PeakMemory
from codepeft.training.dropout import fast_dropout_enabled
from codepeft.training.provenance import git_commit, machine, package_versions
from codepeft.training.trainer import CodepeftTrainer, supports_logits_at_targets
from codepeft.training.varlen import supports_varlen, varlen_attention_enabled


@dataclass
class RunResult:
    run_dir: Path
    cost: dict
    final_train_loss: float | None
    final_eval_loss: float | None
    model: Any = field(default=None, repr=False)  # the tuned model, in memory (eval mode)
    tokenizer: Any = field(default=None, repr=False)


def default_run_dir(config: RunConfig) -> Path:
    return Path("runs") / f"{config.name}-{config.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def _autocast(mode: str, dtype: str, device: str) -> str | None:
    """The autocast dtype of training (None: none); `auto` follows the model's resolved dtype."""
    if mode == "auto":
        return "bf16" if dtype == "bf16" else None
    if device == "cpu" and mode == "fp16":
        raise CodepeftError("train.mixed_precision=fp16 needs a GPU; use no (fp32) or bf16 on CPU")
    return None if mode == "no" else mode


def _precision(config: RunConfig, family: str) -> dict:
    """What dtype the weights load in and what autocast training uses, with the reason.

    Under autocast the trainable weights stay fp32 (the master weights that small updates are
    added to), as Trainer's mixed precision expects: full fine-tuning loads fp32 weights, and
    adapters are fp32 whatever the base's dtype."""
    device = resolve_device(config.model.device)
    dtype, reason = resolve_dtype(config.model.dtype, device)
    autocast = _autocast(config.train.mixed_precision, dtype, device)
    weights = "fp32" if autocast and family == "full" else dtype
    return {"dtype": dtype, "reason": reason, "weights": weights, "autocast": autocast or "none"}


def train(config: RunConfig, output_dir: str | Path | None = None, resume: bool = False) -> RunResult:
    """Train one run; with resume=True continue the run in output_dir from its last checkpoint."""
    run_dir = Path(output_dir) if output_dir else default_run_dir(config)
    recorded_precision = None
    if resume:
        if not (run_dir / "run.json").is_file():
            raise CodepeftError(f"cannot resume: {run_dir} holds no run.json")
        info = json.loads((run_dir / "run.json").read_text())
        if info.get("status") == "completed":
            raise CodepeftError(f"run {run_dir} already completed; nothing to resume")
        recorded_precision = info.get("precision")  # continue as it began, whatever `auto` says here
    elif (run_dir / "run.json").is_file():
        raise CodepeftError(f"{run_dir} already holds a run; pass --resume to continue it or pick another directory")
    method = get_method(config.method.name)
    options = method.options(config.method.options)
    quant = check_combination(method, options, config.model, config.train)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)

    precision = recorded_precision or _precision(config, method.family)
    model_spec = config.model.model_copy(update={"quantization": quant, "dtype": precision["weights"]})
    base_path = resolve_name(config.model.name_or_path)
    model_spec.name_or_path = base_path
    limit = context_limit(load_config(base_path, model_spec))
    if limit is not None and config.data.max_length > limit:
        raise CodepeftError(
            f"data.max_length={config.data.max_length} is above the {limit} positions the model "
            f"{config.model.name_or_path!r} can attend over; set data.max_length to at most {limit}"
        )
    model, tokenizer = load_model(model_spec)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if config.data.packing is True and method.family == "prompt":
        raise CodepeftError(
            f"data.packing cannot be used with {method.name}: peft drops position ids for virtual-token "
            "methods, so packed examples would attend to each other. Set data.packing=false."
        )
    # Padding-free batches (the default) need position ids to reach the attention mask: not for
    # virtual-token methods (peft drops them) nor encoder-decoder models; those pad instead.
    flatten = config.data.packing == "batch" and method.family != "prompt" and not encoder_decoder
    # ... and each example's attention computed on its own (not a masked square over the row)
    varlen = flatten and supports_varlen(model)
    # ... and logits computed only at the positions the loss reads
    logits_on_targets = flatten and supports_logits_at_targets(model)
    train_ds, eval_ds = build_datasets(config.data, tokenizer, encoder_decoder, config.seed)

    device = next(model.parameters()).device.type
    t = config.train
    total_steps = t.max_steps if t.max_steps > 0 else int(len(train_ds) * t.epochs / (t.batch_size * t.grad_accum)) or 1
    ctx = ApplyContext(
        tokenizer_path=base_path,
        total_steps=total_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        quantized=quant != "none",
    )
    model = method.apply(model, options, ctx)
    if precision["autocast"] != "none":
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    model.config.use_cache = False  # the KV cache is useless in training and defeats packed masks
    params = count_parameters(model)

    info = {
        "name": config.name,
        "status": "running",
        "config": config.model_dump(mode="json"),
        "method": {"name": method.name, "family": method.family, "options": options},
        "learning_rate": t.learning_rate or method.learning_rate,
        "base_model": base_path,
        "quantization": quant,
        "precision": precision,
        "seed": config.seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "data": {
            "train_rows": len(train_ds),
            "eval_rows": _rows(eval_ds),
            "batches": "padding-free" if flatten else "packed rows" if config.data.packing is True else "padded",
            "attention": "per example" if varlen else "masked",
            "dropout": "codepeft (64-bit draws)" if t.fast_dropout and device == "cpu" else "torch",
            "logits": "at loss targets" if logits_on_targets else "every position",
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **params,
    }
    _write_json(run_dir / "run.json", info)

    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=info["learning_rate"],
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        gradient_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to=t.report_to or "none",
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=t.num_workers,
        use_cpu=device == "cpu",
        disable_tqdm=False,
        **({precision["autocast"]: True} if precision["autocast"] != "none" else {}),
    )
    if "tensorboard" in t.report_to:  # transformers 5 reads the log directory from the environment
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    callbacks = [metrics, CheckpointManifest()]
    if getattr(getattr(model, "peft_type", None), "value", None) == "ADALORA":
        callbacks.append(AdaLoraSchedule(model))
    trainer = _make_trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=Collator(tokenizer.pad_token_id, encoder_decoder, flatten=flatten, boundaries=varlen),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.explode_factor = t.explode_factor
    trainer.logits_on_targets = logits_on_targets
    checkpoint = last_good_checkpoint(args.output_dir) if resume else None
    if resume:
        metrics.truncate_after(int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0)

    try:
        attention = varlen_attention_enabled(trainer.model) if varlen else contextlib.nullcontext()
        masks = fast_dropout_enabled(trainer.model) if t.fast_dropout else contextlib.nullcontext()
        with PeakMemory(cuda=device == "cuda") as mem, attention, masks:
            output = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException as err:
        info.update(status="failed", error=f"{type(err).__name__}: {err}")
        _write_json(run_dir / "run.json", info)
        raise

    final_eval = None
    if eval_ds is not None:
        # Evaluate at the final step unless the schedule just did (its row is already logged).
        last = [h for h in trainer.state.log_history if h.get("step") == trainer.state.global_step]
        final_eval = _eval_loss(
            next((h for h in last if any(k.endswith("_loss") and k.startswith("eval") for k in h)), None)
            or trainer.evaluate()
        )
    model.config.use_cache = True
    weights = save_weights(trainer.model, tokenizer, run_dir, method.family, base_path)
    cost = {
        **params,
        "peak_memory_bytes": mem.peak,
        "peak_memory_gb": round(mem.peak / 2**30, 3),
        "peak_memory_kind": mem.kind,
        # what the process held when training began (weights, data): a process that ran other
        # work before has a higher RSS floor, so compare runs made in fresh processes
        "memory_at_start_bytes": mem.at_start,
        "wall_time_s": round(mem.wall_time, 2),
        "train_tokens": trainer.tokens_seen,
        "train_target_tokens": trainer.targets_seen,
        "tokens_per_s": round(trainer.tokens_seen / max(mem.wall_time, 1e-9), 1),
        "steps": trainer.state.global_step,
        "resumed_from": checkpoint,
        "device": device,
    }
    _write_json(run_dir / "cost.json", cost)
    info.update(
        status="completed",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        weights=str(weights.relative_to(run_dir)),
        final_train_loss=output.training_loss,
        final_eval_loss=final_eval,
    )
    _write_json(run_dir / "run.json", info)
    # Without accelerate's autocast wrapper, the model in memory computes as the reloaded one does.
    tuned = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    return RunResult(run_dir, cost, output.training_loss, final_eval, tuned, tokenizer)


def _make_trainer(model, **kwargs) -> CodepeftTrainer:
    # transformers refuses to train a quantized model unless it sees adapters it knows of; our
    # bottleneck adapters are trainable modules it cannot see, so announce them for the check only
    # (left set, the flag would make save_pretrained try to save a peft adapter).
    quantized_with_our_adapters = getattr(model, "is_quantized", False) and hasattr(model, "codepeft_bottleneck")
    if quantized_with_our_adapters:
        model._hf_peft_config_loaded = True
    try:
        return CodepeftTrainer(model=model, **kwargs)
    finally:
        if quantized_with_our_adapters:
            model._hf_peft_config_loaded = False


def _rows(ds) -> int | dict | None:
    if ds is None:
        return None
    return {k: len(v) for k, v in ds.items()} if isinstance(ds, dict) else len(ds)


def _eval_loss(result: dict) -> float | None:
    losses = [v for k, v in result.items() if k.endswith("_loss")]
    return float(sum(losses) / len(losses)) if losses else None


__all__ = ["RunResult", "train"]
