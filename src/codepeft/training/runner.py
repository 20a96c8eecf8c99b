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

from codepeft.allocator import TRAINING, retain_freed_memory
from codepeft.config import RunConfig
from codepeft.data import Collator, build_datasets
from codepeft.errors import CodepeftError
from codepeft.families import MethodFamily
from codepeft.methods import ApplyContext, count_parameters
from codepeft.models.loading import load_model
from codepeft.training.artifacts import last_good_checkpoint, save_weights
from codepeft.training.callbacks import AdaLoraSchedule, CheckpointManifest, MetricsLog, ProgressFile
from codepeft.training.checks import CheckedRun, check
from codepeft.training.cost import PeakMemory
from codepeft.training.dropout import fast_dropout_enabled
from codepeft.training.lora_kernel import fused_lora_enabled
from codepeft.training.model_card import write_model_card
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


def train(
    config: RunConfig, output_dir: str | Path | None = None, resume: bool = False, run_name: str | None = None
) -> RunResult:
    """Train one run; with resume=True continue the run in output_dir from its last checkpoint.
    `run_name` names the run in the trackers of `train.report_to` (a study passes its cell's
    label; default: the config's name).

    The steps, each below: open the run directory, check the whole config (nothing loads before
    it passes), load the model, build the data, apply the method, record run.json, train, record
    the cost and the final state."""
    run_dir, recorded_precision = _open_run_dir(config, output_dir, resume)
    checked = check(config, recorded_precision)  # continue as it began, whatever `auto` says here
    run_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    model, tokenizer = _load(config, checked)
    plan = _batching(config, checked, model)
    train_ds, eval_ds = build_datasets(config.data, tokenizer, plan.encoder_decoder, config.seed)
    model = _apply_method(config, checked, model, len(train_ds))
    params = count_parameters(model)
    device = _device_of(model)
    info = _run_info(config, checked, plan, params, train_ds, eval_ds, device)
    info["run_name"] = run_name or config.name
    _write_json(run_dir / "run.json", info)

    trainer, metrics = _trainer(config, checked, plan, model, tokenizer, train_ds, eval_ds, run_dir, info)
    checkpoint = last_good_checkpoint(trainer.args.output_dir) if resume else None
    if resume:
        metrics.truncate_after(int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0)
    try:
        output, mem = _fit(trainer, config, plan, checkpoint)
    except BaseException as err:
        info.update(status="failed", error=f"{type(err).__name__}: {err}")
        _write_json(run_dir / "run.json", info)
        raise

    with training_kernels(trainer.model, plan.varlen, training=False):
        final_eval = _final_eval_loss(trainer) if eval_ds is not None else None
    model.config.use_cache = True
    weights = save_weights(trainer.model, tokenizer, run_dir, checked.method.family, checked.base_path)
    cost = _cost(params, mem, trainer, checkpoint, device)
    _write_json(run_dir / "cost.json", cost)
    info.update(
        status="completed",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        weights=str(weights.relative_to(run_dir)),
        final_train_loss=output.training_loss,
        final_eval_loss=final_eval,
    )
    _write_json(run_dir / "run.json", info)
    write_model_card(weights, info, cost)
    # Without accelerate's autocast wrapper, the model in memory computes as the reloaded one does.
    tuned = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    return RunResult(run_dir, cost, output.training_loss, final_eval, tuned, tokenizer)


def _open_run_dir(config: RunConfig, output_dir, resume: bool) -> tuple[Path, dict | None]:
    """The run directory, and the precision recorded by the run being resumed (None: a new run)."""
    run_dir = Path(output_dir) if output_dir else default_run_dir(config)
    if not resume:
        if (run_dir / "run.json").is_file():
            raise CodepeftError(
                f"{run_dir} already holds a run; pass --resume to continue it or pick another directory"
            )
        return run_dir, None
    if not (run_dir / "run.json").is_file():
        raise CodepeftError(f"cannot resume: {run_dir} holds no run.json")
    info = json.loads((run_dir / "run.json").read_text())
    if info.get("status") == "completed":
        raise CodepeftError(f"run {run_dir} already completed; nothing to resume")
    return run_dir, info.get("precision")


def _load(config: RunConfig, checked: CheckedRun):
    spec = config.model.model_copy(
        update={
            "quantization": checked.quantization,
            "dtype": checked.precision["weights"],
            "name_or_path": checked.base_path,
        }
    )
    return load_model(spec)


@dataclass
class Batching:
    """How batches are laid out for this model and method (recorded in run.json)."""

    encoder_decoder: bool
    # Padding-free batches (the default) need position ids to reach the attention mask: not for
    # virtual-token methods (peft drops them) nor encoder-decoder models; those pad instead.
    flatten: bool
    varlen: bool  # ... and each example's attention computed on its own (not a masked square)
    logits_on_targets: bool  # ... and logits computed only at the positions the loss reads


def _batching(config: RunConfig, checked: CheckedRun, model) -> Batching:
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    prompt_family = checked.method.family is MethodFamily.PROMPT
    flatten = config.data.packing == "batch" and not prompt_family and not encoder_decoder
    return Batching(
        encoder_decoder=encoder_decoder,
        flatten=flatten,
        varlen=flatten and supports_varlen(model),
        logits_on_targets=flatten and supports_logits_at_targets(model),
    )


def _apply_method(config: RunConfig, checked: CheckedRun, model, train_rows: int):
    t = config.train
    total_steps = t.max_steps if t.max_steps > 0 else int(train_rows * t.epochs / (t.batch_size * t.grad_accum)) or 1
    ctx = ApplyContext(
        tokenizer_path=checked.base_path,
        total_steps=total_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        quantized=checked.quantization != "none",
    )
    model = checked.method.apply(model, checked.options, ctx)
    if checked.precision["autocast"] != "none":
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    model.config.use_cache = False  # the KV cache is useless in training and defeats packed masks
    return model


def _device_of(model) -> str:
    return next(model.parameters()).device.type


def _run_info(config, checked: CheckedRun, plan: Batching, params, train_ds, eval_ds, device: str) -> dict:
    t = config.train
    return {
        "name": config.name,
        "status": "running",
        "config": config.model_dump(mode="json"),
        "method": {"name": checked.method.name, "family": checked.method.family, "options": checked.options},
        "learning_rate": t.learning_rate or checked.method.learning_rate,
        "base_model": checked.base_path,
        "quantization": checked.quantization,
        "precision": checked.precision,
        "seed": config.seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "data": {
            "train_rows": len(train_ds),
            "eval_rows": _rows(eval_ds),
            "batches": "padding-free" if plan.flatten else "packed rows" if config.data.packing is True else "padded",
            "attention": "per example" if plan.varlen else "masked",
            "dropout": "codepeft (64-bit draws)" if t.fast_dropout and device == "cpu" else "torch",
            "logits": (
                f"at loss targets, {config.train.loss_chunk} at a time"
                if config.train.loss_chunk and not plan.encoder_decoder
                else "at loss targets"
                if plan.logits_on_targets
                else "every position"
            ),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **params,
    }


def _training_arguments(config: RunConfig, run_dir: Path, info: dict, evaluates: bool, device: str):
    t = config.train
    autocast = info["precision"]["autocast"]
    return TrainingArguments(
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
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        logging_steps=t.logging_steps,
        eval_strategy="steps" if evaluates else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to=t.report_to or "none",
        run_name=info.get("run_name", config.name),
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=t.num_workers,
        use_cpu=device == "cpu",
        disable_tqdm=False,
        **({autocast: True} if autocast != "none" else {}),
    )


def _trainer(config, checked: CheckedRun, plan: Batching, model, tokenizer, train_ds, eval_ds, run_dir, info):
    """The Trainer with its arguments, callbacks and codepeft's options; and the metrics log."""
    t = config.train
    args = _training_arguments(config, run_dir, info, eval_ds is not None, _device_of(model))
    if "tensorboard" in t.report_to:  # transformers 5 reads the log directory from the environment
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    callbacks = [metrics, CheckpointManifest(), ProgressFile(run_dir)]
    if getattr(getattr(model, "peft_type", None), "value", None) == "ADALORA":
        callbacks.append(AdaLoraSchedule(model))
    trainer = _make_trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=Collator(
            tokenizer.pad_token_id, plan.encoder_decoder, flatten=plan.flatten, boundaries=plan.varlen
        ),
        processing_class=tokenizer,
        callbacks=callbacks,
        explode_factor=t.explode_factor,
        logits_on_targets=plan.logits_on_targets,
        loss_chunk=0 if plan.encoder_decoder else t.loss_chunk,
    )
    return trainer, metrics


def _fit(trainer, config: RunConfig, plan: Batching, checkpoint: str | None):
    """Train (from `checkpoint` when resuming) with codepeft's attention and dropout kernels on,
    measuring peak memory and wall time."""
    kernels = training_kernels(trainer.model, plan.varlen, config.train.fast_dropout)
    device = _device_of(trainer.model)
    if device == "cpu":
        retain_freed_memory(TRAINING)  # each step reuses what the last one freed (codepeft.allocator)
    with PeakMemory(cuda=device == "cuda") as mem, kernels:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    return output, mem


@contextlib.contextmanager
def training_kernels(model, varlen: bool = True, fast_dropout: bool = True, training: bool = True):
    """codepeft's per-example attention (`varlen`: training and held-out loss, the same
    padding-free batches) and, while training, its dropout masks and fused LoRA update
    (`fast_dropout`, both CPU only) on `model` while the block runs."""
    with contextlib.ExitStack() as stack:
        if varlen:
            stack.enter_context(varlen_attention_enabled(model))
        if training and fast_dropout:
            stack.enter_context(fast_dropout_enabled(model))
            stack.enter_context(fused_lora_enabled(model))
        yield


def _final_eval_loss(trainer) -> float | None:
    """The eval loss at the final step; evaluated now unless the schedule just did (its row is logged)."""
    last = [h for h in trainer.state.log_history if h.get("step") == trainer.state.global_step]
    logged = next((h for h in last if any(k.endswith("_loss") and k.startswith("eval") for k in h)), None)
    return _eval_loss(logged or trainer.evaluate())


def _cost(params: dict, mem, trainer, checkpoint: str | None, device: str) -> dict:
    return {
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
