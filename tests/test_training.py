"""Training runs end to end: run directory contents, cost figures, resume, NaN stop, refusals."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from helpers import tiny_run_config

from codepeft import load_config, load_run, train
from codepeft.errors import CodepeftError, NonFiniteLossError

_cfg = tiny_run_config


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_holds_everything(tmp_path, tiny_model, train_file, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from codepeft.allocator import TRAINING
    from codepeft.training import runner

    kept = []
    monkeypatch.setattr(runner, "retain_freed_memory", lambda setting: kept.append(setting) or True)
    result = train(_cfg(tiny_model, train_file), tmp_path / "run")
    assert kept == [TRAINING]  # a CPU run keeps what a step frees for the next (codepeft.allocator)
    d = result.run_dir
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 0
    assert info["config"]["method"]["name"] == "lora"
    assert info["versions"]["torch"].startswith("2.13") and info["versions"]["peft"]
    assert "git_commit" in info and info["machine"]["cpu_count"] >= 1
    # train loss every logging step, eval loss every eval step
    rows = _rows(d)
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
    cost = json.loads((d / "cost.json").read_text())
    assert cost["trainable_params"] == info["trainable_params"] > 0
    assert cost["trainable_ratio"] == pytest.approx(cost["trainable_params"] / cost["total_params"])
    assert cost["peak_memory_kind"] == "cpu_peak_rss" and cost["peak_memory_bytes"] > 50 * 2**20
    assert cost["wall_time_s"] > 0 and cost["tokens_per_s"] > 0
    # tokens: exactly the non-padding tokens of the 6 x 4 examples seen
    from codepeft.data import build_datasets

    cfg = _cfg(tiny_model, train_file)
    _, tok, _ = load_run(d, device="cpu")
    train_ds, _ = build_datasets(cfg.data, tok, False, 0)
    # 23 training rows (one of 24 held out), batches of 4: 6 steps are exactly one epoch,
    # so every row's real tokens are counted once, whatever the shuffle order
    assert len(train_ds) == 23
    assert cost["train_tokens"] == sum(len(r["input_ids"]) for r in train_ds)
    # a plain peft adapter, loadable without codepeft
    base = AutoModelForCausalLM.from_pretrained(tiny_model("gpt_bigcode"))
    PeftModel.from_pretrained(base, d / "adapter")
    # its model card says what the run was, from what it recorded (not peft's empty template)
    from huggingface_hub import ModelCard

    card = ModelCard.load(d / "adapter" / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    text = " ".join(card.text.split())
    assert f"{info['final_train_loss']:.4f}" in text and "6 steps" in text and "More Information Needed" not in text
    assert f"{cost['trainable_params']:,} of" in text and "codepeft 0." in text
    assert "licence of the base | unknown" in text  # a local test model has no card to take it from
    # progress for a watching study: the last step
    assert json.loads((d / ".progress").read_text())["step"] == 6


def test_full_fine_tuning_saves_full_weights(tmp_path, tiny_model, train_file):
    from transformers import AutoModelForCausalLM

    result = train(_cfg(tiny_model, train_file, "gpt_bigcode", "method.name=full"), tmp_path / "full")
    assert (result.run_dir / "model" / "config.json").is_file()
    AutoModelForCausalLM.from_pretrained(result.run_dir / "model")
    card = (result.run_dir / "model" / "README.md").read_text()
    assert "library_name: transformers" in card and "Full fine-tune" in card


def test_bottleneck_adapter_format(tmp_path, tiny_model, train_file):
    result = train(
        _cfg(tiny_model, train_file, "llama", "method.name=adapter_pfeiffer", "method.size=8"), tmp_path / "a"
    )
    meta = json.loads((result.run_dir / "adapter" / "codepeft_adapter.json").read_text())
    assert meta["format"] == "codepeft-bottleneck/1" and meta["method"] == "adapter_pfeiffer"
    assert meta["options"]["size"] == 8 and len(meta["parameters"]) == 2 * 4  # 2 layers x (down, up) x (w, b)


def test_resume_continues_from_last_checkpoint(tmp_path, tiny_model, train_file, monkeypatch):
    import codepeft.training.runner as runner

    class CrashAtStep5(runner.MetricsLog):  # dies after step 4 was logged and checkpoint-3 saved
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt

    cfg = _cfg(tiny_model, train_file)
    monkeypatch.setattr(runner, "MetricsLog", CrashAtStep5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r")
    monkeypatch.undo()
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["status"] == "failed"
    assert max(r["step"] for r in _rows(tmp_path / "r")) == 4
    with pytest.raises(CodepeftError, match="already holds a run"):
        train(cfg, tmp_path / "r")

    result = train(cfg, tmp_path / "r", resume=True)
    assert result.cost["resumed_from"].endswith("checkpoint-3") and result.cost["steps"] == 6
    steps = [r["step"] for r in _rows(tmp_path / "r") if "loss" in r]
    assert steps == [2, 4, 6]  # the row logged after the checkpoint was replaced, not duplicated
    with pytest.raises(CodepeftError, match="already completed"):
        train(cfg, tmp_path / "r", resume=True)


def test_nan_loss_stops_with_last_checkpoint(tmp_path, tiny_model, train_file, monkeypatch):
    from codepeft.training.trainer import CodepeftTrainer

    original = CodepeftTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        return loss * float("nan") if model.training and self.state.global_step >= 4 else loss

    monkeypatch.setattr(CodepeftTrainer, "compute_loss", poisoned)
    with pytest.raises(NonFiniteLossError) as err:
        train(_cfg(tiny_model, train_file), tmp_path / "nan")
    assert err.value.step == 5 and err.value.last_checkpoint.endswith("checkpoint-3")
    assert "checkpoint-3" in str(err.value) and "nan" in str(err.value)
    info = json.loads((tmp_path / "nan" / "run.json").read_text())
    assert info["status"] == "failed" and "NonFiniteLossError" in info["error"]


class _PoisonGradient(torch.autograd.Function):
    """Leaves the loss as it is and multiplies its gradient by `factor` (NaN, or a huge number)."""

    @staticmethod
    def forward(ctx, loss, factor):
        ctx.factor = factor
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


@pytest.mark.parametrize(("factor", "message"), [(float("nan"), "gradient norm became nan"), (1e7, "exploded")])
def test_bad_gradients_stop_the_run_before_the_optimizer_step(
    tmp_path, tiny_model, train_file, monkeypatch, factor, message
):
    from codepeft.training.trainer import CodepeftTrainer

    original = CodepeftTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        return _PoisonGradient.apply(loss, factor) if model.training and self.state.global_step >= 12 else loss

    monkeypatch.setattr(CodepeftTrainer, "compute_loss", poisoned)
    cfg = _cfg(tiny_model, train_file, "gpt_bigcode", "train.max_steps=16", "train.save_steps=4", "train.eval_steps=50")
    with pytest.raises(NonFiniteLossError, match=message) as err:
        train(cfg, tmp_path / "bad")
    assert err.value.step == 13 and err.value.last_checkpoint.endswith("checkpoint-12")
    assert "resume" in str(err.value)
    info = json.loads((tmp_path / "bad" / "run.json").read_text())
    assert info["status"] == "failed" and message in info["error"]


def test_exploding_gradient_check_can_be_turned_off(tmp_path, tiny_model, train_file, monkeypatch):
    from codepeft.training.trainer import CodepeftTrainer

    original = CodepeftTrainer.compute_loss

    def spiky(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        return _PoisonGradient.apply(loss, 1e7) if model.training and self.state.global_step == 12 else loss

    monkeypatch.setattr(CodepeftTrainer, "compute_loss", spiky)
    cfg = _cfg(tiny_model, train_file, "gpt_bigcode", "train.max_steps=14", "train.explode_factor=null")
    assert train(cfg, tmp_path / "spiky").cost["steps"] == 14  # clipping absorbs the one spike


@pytest.mark.parametrize(
    ("method", "batches", "attention"),
    [("lora", "padding-free", "per example"), ("prompt", "padded", "masked")],
)
def test_batches_are_padding_free_where_the_method_allows(tmp_path, tiny_model, train_file, method, batches, attention):
    result = train(_cfg(tiny_model, train_file, "gpt_bigcode", f"method.name={method}"), tmp_path / method)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["data"]["batches"] == batches and info["data"]["attention"] == attention
    rows = _rows(result.run_dir)
    assert all(r["time_s"] >= 0 for r in rows) and [r["time_s"] for r in rows] == sorted(r["time_s"] for r in rows)


def test_gradient_checkpointing_and_packing_train(tmp_path, tiny_model, train_file):
    result = train(
        _cfg(tiny_model, train_file, "qwen2", "train.gradient_checkpointing=true", "data.packing=true"),
        tmp_path / "gc",
    )
    assert result.final_train_loss is not None and result.final_train_loss == result.final_train_loss


def test_encoder_decoder_trains(tmp_path, tiny_model, train_file):
    result = train(_cfg(tiny_model, train_file, "t5"), tmp_path / "t5")
    assert result.cost["train_tokens"] > 0 and result.final_eval_loss is not None


@pytest.mark.numerics
def test_qlora_trains_on_cpu_4bit_and_8bit(tmp_path, tiny_model, train_file, bnb_cpu_path):
    pytest.importorskip("bitsandbytes")
    for bits in (4, 8):
        result = train(
            _cfg(tiny_model, train_file, "llama", "method.name=qlora", f"method.bits={bits}"),
            tmp_path / f"q{bits}",
        )
        info = json.loads((result.run_dir / "run.json").read_text())
        assert info["quantization"] == f"{bits}bit"
        linear = result.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
        assert type(linear).__name__ == ("Linear4bit" if bits == 4 else "Linear8bitLt")
        model, _, _ = load_run(result.run_dir, device="cpu")
        ids = torch.tensor([[5, 6, 7, 8]])
        torch.testing.assert_close(model(input_ids=ids).logits, result.model(input_ids=ids).logits)


# --- bad input: one clear error each -------------------------------------------------------------------


def test_unknown_method(tmp_path, tiny_model, train_file):
    with pytest.raises(CodepeftError, match=r"unknown method 'loraa' \(did you mean 'lora'\?\); known methods: .*lora"):
        train(_cfg(tiny_model, train_file, "gpt_bigcode", "method.name=loraa"), tmp_path / "x")


def test_unknown_method_option(tmp_path, tiny_model, train_file):
    with pytest.raises(CodepeftError, match=r"unknown option\(s\) \['rr'\] for method 'lora'"):
        train(_cfg(tiny_model, train_file, "gpt_bigcode", "method.rr=4"), tmp_path / "x")


def test_target_modules_not_found_lists_module_names(tmp_path, tiny_model, train_file):
    with pytest.raises(CodepeftError) as err:
        train(_cfg(tiny_model, train_file, "llama", "method.target_modules=[qkv]"), tmp_path / "x")
    assert "['qkv'] match no module" in str(err.value) and "q_proj" in str(err.value)


def test_unreachable_model_id(tmp_path, train_file):
    cfg = load_config(None, ["model.name_or_path=nobody/no-such-model", f"data.train.0.source={train_file}"])
    with pytest.raises(CodepeftError, match=r"cannot load model 'nobody/no-such-model': it is not a local"):
        train(cfg, tmp_path / "x")


def test_refused_combinations(tmp_path, tiny_model, train_file, monkeypatch):
    with pytest.raises(CodepeftError, match="cannot train with gradient checkpointing"):
        train(
            _cfg(
                tiny_model,
                train_file,
                "gpt_bigcode",
                "method.name=prefix",
                "train.gradient_checkpointing=true",
            ),
            tmp_path / "a",
        )
    with pytest.raises(CodepeftError, match="cannot train on a quantized base"):
        train(
            _cfg(tiny_model, train_file, "gpt_bigcode", "method.name=full", "model.quantization=8bit"),
            tmp_path / "b",
        )
    with pytest.raises(CodepeftError, match="data.packing cannot be used with prompt"):
        train(
            _cfg(tiny_model, train_file, "gpt_bigcode", "method.name=prompt", "data.packing=true"),
            tmp_path / "c",
        )
    import codepeft.methods.apply as apply_mod

    monkeypatch.setattr(apply_mod, "bitsandbytes_available", lambda: False)
    with pytest.raises(CodepeftError, match="needs bitsandbytes"):
        train(_cfg(tiny_model, train_file, "gpt_bigcode", "method.name=qlora"), tmp_path / "d")


def test_merging_a_bottleneck_adapter_is_refused(tiny_model):
    from transformers import AutoModelForCausalLM

    from codepeft.config import MethodSpec
    from codepeft.methods import apply_method, merge_model

    model = apply_method(
        AutoModelForCausalLM.from_pretrained(tiny_model("gpt_bigcode")),
        MethodSpec(name="adapter_parallel", size=4),
    )
    with pytest.raises(CodepeftError, match="non-linear"):
        merge_model(model, "adapter_parallel")


def test_bottleneck_adapter_trains_on_8bit_base(tmp_path, tiny_model, train_file):
    # Astraios trained every PEFT method, adapters included, on an 8-bit base.
    pytest.importorskip("bitsandbytes")
    result = train(
        _cfg(
            tiny_model,
            train_file,
            "llama",
            "method.name=adapter_houlsby",
            "method.size=8",
            "model.quantization=8bit",
        ),
        tmp_path / "a8",
    )
    assert type(result.model.model.layers[0].mlp.down_proj).__name__ == "Linear8bitLt"
    assert result.cost["trainable_params"] == 2 * 2 * (2 * 64 * 8 + 8 + 64)
    model, _, _ = load_run(result.run_dir, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(input_ids=ids).logits, result.model(input_ids=ids).logits)


def test_prompt_tuning_text_init_starts_from_the_text_embedding(tmp_path, tiny_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from codepeft.config import MethodSpec
    from codepeft.methods import ApplyContext, apply_method

    path = tiny_model("gpt_bigcode")
    base = AutoModelForCausalLM.from_pretrained(path)
    words = base.get_input_embeddings().weight.detach().clone()
    text = "Generate Python code."
    model = apply_method(
        base,
        MethodSpec(name="prompt", init="text", init_text=text, num_virtual_tokens=4),
        ApplyContext(tokenizer_path=str(path)),
    )
    virtual = model.prompt_encoder["default"].embedding.weight.detach()
    ids = tiny_tokenizer(text)["input_ids"]
    expected = words[(ids * 4)[:4]]  # peft repeats / cuts the text's tokens to the number of virtual tokens
    torch.testing.assert_close(virtual, expected)


def test_tensorboard_logging(tmp_path, tiny_model, train_file):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tiny_model, train_file, "gpt_bigcode", "train.report_to=[tensorboard]")
    result = train(cfg, tmp_path / "tb", run_name="study/lora/stdlib/seed0")
    events = list((result.run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    logged = EventAccumulator(str(events[0].parent)).Reload()
    assert "train/loss" in logged.Tags()["scalars"]
    assert b'"run_name": "study/lora/stdlib/seed0"' in events[0].read_bytes()  # the cell's label names the run


@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "qwen2", "codegen", "t5"])
@pytest.mark.numerics
def test_qlora_on_every_architecture(tmp_path, tiny_model, train_file, arch, bnb_cpu_path):
    pytest.importorskip("bitsandbytes")
    result = train(_cfg(tiny_model, train_file, arch, "method.name=qlora", "train.max_steps=8"), tmp_path / arch)
    rows = [r["loss"] for r in _rows(result.run_dir) if "loss" in r]
    assert rows[-1] < rows[0], rows
    assert any(type(m).__name__ == "Linear4bit" for m in result.model.modules())
    model, tok, _ = load_run(result.run_dir, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    kwargs = {"decoder_input_ids": torch.tensor([[1, 5]])} if arch == "t5" else {}
    torch.testing.assert_close(model(input_ids=ids, **kwargs).logits, result.model(input_ids=ids, **kwargs).logits)
    out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[-1] > (0 if arch == "t5" else ids.shape[-1])


def test_resume_skips_half_written_and_damaged_checkpoints(tmp_path, caplog):
    import json

    from safetensors.torch import save_file

    from codepeft.training.artifacts import last_good_checkpoint, write_manifest

    def checkpoint(step, state=True, manifest=False):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        save_file({"w": torch.ones(64, 64)}, path / "adapter_model.safetensors")
        torch.save({"state": {0: torch.zeros(64)}}, path / "optimizer.pt")
        if state:
            (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if manifest:
            write_manifest(path)
        return path

    def cut(path, keep):
        path.write_bytes(path.read_bytes()[:keep])

    checkpoint(2)
    checkpoint(4, manifest=True)
    checkpoint(6, state=False)  # killed while saving: no state file yet
    cut(checkpoint(8) / "trainer_state.json", 5)  # state file cut short
    cut(checkpoint(10) / "adapter_model.safetensors", 1000)  # weights cut short, no manifest
    cut(checkpoint(12) / "optimizer.pt", 300)  # optimizer cut short, no manifest
    damaged = checkpoint(14, manifest=True) / "adapter_model.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte, same size: only the checksum sees it
    damaged.write_bytes(bytes(data))
    (checkpoint(16, manifest=True) / "optimizer.pt").unlink()

    with caplog.at_level("WARNING"):
        assert last_good_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    broken = [f"broken-checkpoint-{n}" for n in (10, 12, 14, 16, 6, 8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint-2", "checkpoint-4", *broken])
    text = caplog.text
    assert "optimizer.pt is missing" in text and "does not match its checksum" in text
    assert "adapter_model.safetensors is cut short" in text and "optimizer.pt is not a whole torch archive" in text
    assert "trainer_state.json is missing or cut short" in text
    assert last_good_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")  # stable on a second look
    assert last_good_checkpoint(tmp_path / "missing") is None


def test_training_writes_a_manifest_per_checkpoint(tmp_path, tiny_model, train_file):
    from codepeft.training.artifacts import MANIFEST, checkpoint_problem

    result = train(_cfg(tiny_model, train_file), tmp_path / "run")
    checkpoints = sorted((result.run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and all((c / MANIFEST).is_file() and checkpoint_problem(c) is None for c in checkpoints)


def test_metrics_log_drops_a_line_cut_short(tmp_path):
    from codepeft.training.callbacks import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "loss": 0.9}\n{"step": 6, "lo')
    MetricsLog(path).truncate_after(4)
    assert path.read_text() == '{"step": 2, "loss": 1.0}\n{"step": 4, "loss": 0.9}\n'


@pytest.mark.parametrize(("chunk", "chunked"), [(4, True), (100_000, True), (0, False)])
def test_the_loss_is_chunked_whenever_loss_chunk_is_set(tmp_path, tiny_model, train_file, monkeypatch, chunk, chunked):
    """The chunked loss recomputes nothing, so it is used whenever `train.loss_chunk` is set
    (even a batch with fewer targets than a chunk keeps no logits for the backward pass); 0
    keeps the model's own loss."""
    import codepeft.training.trainer as trainer

    calls = []
    real = trainer.chunked_causal_loss
    record = lambda *a, **k: (a[0].training and calls.append(a[2])) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(trainer, "chunked_causal_loss", record)
    train(_cfg(tiny_model, train_file, "llama", f"train.loss_chunk={chunk}", "train.max_steps=2"), tmp_path / "r")
    assert bool(calls) is chunked and all(c == chunk for c in calls)


def test_held_out_loss_is_computed_in_chunks_with_per_example_attention(tmp_path, tiny_model, train_file, monkeypatch):
    """Evaluation needs no gradient: its loss goes through the chunked path (logits of at most
    EVAL_LOSS_CHUNK targets at once, nothing recomputed) and, like training, attends within each
    example of its padding-free batches, the final evaluation after training included; the loss
    is the one computed with every logit at once."""
    import codepeft.training.trainer as trainer
    from codepeft.models.loading import base_model

    seen = []
    real_step = trainer.CodepeftTrainer.prediction_step

    def step(self, model, inputs, *a, **k):
        seen.append(base_model(model).config._attn_implementation)
        return real_step(self, model, inputs, *a, **k)

    chunks = []
    real = trainer.chunked_causal_loss
    monkeypatch.setattr(trainer.CodepeftTrainer, "prediction_step", step)

    def record(model, inputs, chunk, *a, **k):
        if not model.training:
            chunks.append(chunk)
        return real(model, inputs, chunk, *a, **k)

    monkeypatch.setattr(trainer, "chunked_causal_loss", record)
    monkeypatch.setattr(trainer, "EVAL_LOSS_CHUNK", 3)
    overrides = ["train.max_steps=2", "train.eval_steps=100"]  # only the final evaluation
    chunked = train(_cfg(tiny_model, train_file, "llama", "train.loss_chunk=1024", *overrides), tmp_path / "a")
    assert chunks and set(chunks) == {3}  # every evaluation batch in chunks of 3 targets
    assert seen and set(seen) == {"codepeft_varlen"}
    whole = train(_cfg(tiny_model, train_file, "llama", "train.loss_chunk=0", *overrides), tmp_path / "b")
    assert chunked.final_eval_loss == pytest.approx(whole.final_eval_loss, rel=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_lora_update_equals_pefts_forward_and_keeps_less(tiny_model, dropout):
    """Training's LoRA kernel computes what peft's forward computes (same dropout masks, same
    loss, same gradients of the LoRA factors, and of a base layer's weight and bias where they
    train), autograd keeps less for it (as the estimate's trace of it shows), and DoRA layers
    run peft's own forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from codepeft.estimate import traced_activations
    from codepeft.training import lora_kernel
    from codepeft.training.dropout import fast_dropout_enabled

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    config = LoraConfig(r=4, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, config).train()
    trained = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    trained.weight.requires_grad_(True)
    trained.bias = torch.nn.Parameter(torch.randn(trained.out_features))
    ids = torch.randint(0, 100, (2, 16))

    def loss_and_grads(fused: bool):
        model.zero_grad()
        torch.manual_seed(1)
        fuse = lora_kernel.fused_lora_enabled(model) if fused else contextlib.nullcontext()
        with fast_dropout_enabled(model), fuse:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    calls = []
    real = lora_kernel._LoraLinear.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lora_kernel._LoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
        loss, grads = loss_and_grads(True)
    reference, reference_grads = loss_and_grads(False)
    assert len(calls) == sum(1 for n, _ in model.named_modules() if n.endswith("lora_A"))
    torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    assert {"base_layer.weight", "base_layer.bias"} <= {".".join(n.split(".")[-2:]) for n in grads}

    with torch.device("meta"):
        meta = get_peft_model(AutoModelForCausalLM.from_config(base.config), config)
    peft_kept, _ = traced_activations(meta, 4, 64, True, lora_kernel=False)
    fused_kept, _ = traced_activations(meta, 4, 64, True, lora_kernel=True)
    # with dropout, peft keeps each layer's dropped input; the kernel keeps the input they share
    assert fused_kept < peft_kept if dropout else fused_kept == peft_kept

    dora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model("llama")), LoraConfig(r=4, use_dora=True))
    calls.clear()
    with pytest.MonkeyPatch.context() as mp, lora_kernel.fused_lora_enabled(dora):
        mp.setattr(lora_kernel._LoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
        dora.train()(input_ids=ids, labels=ids).loss.backward()
    assert not calls
