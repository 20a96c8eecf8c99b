"""The machine decides the dtype (`model.dtype: auto`), and no path of the CPU changes a run's model."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_run_config as _cfg

from codepeft.models import hardware
from codepeft.training import train
from codepeft.training.artifacts import load_run


@pytest.fixture
def cpu(monkeypatch):
    """cpu(*flags): pretend the CPU reports exactly these feature flags."""
    monkeypatch.delenv(hardware.FORCE_ENV, raising=False)

    def set_flags(*flags):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))

    return set_flags


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("avx2", "fma"), "fp32"),
        (("avx2", "avx512f", "avx512_vnni"), "fp32"),  # AVX-512 without its bf16 instructions
        (("avx2", "avx512f", "avx512_bf16"), "bf16"),
        (("avx2", "avx512f", "amx_tile", "amx_bf16"), "bf16"),
        ((), "fp32"),  # no /proc/cpuinfo: never guess the fast path
    ],
)
def test_auto_dtype_follows_the_cpu_flags(cpu, flags, expected):
    cpu(*flags)
    dtype, reason = hardware.resolve_dtype("auto", "cpu")
    assert dtype == expected
    assert reason.startswith("auto: ")
    if expected == "bf16":
        assert any(f in reason for f in hardware.FAST_BF16_FLAGS)


def test_explicit_dtype_and_the_override_switch(cpu, monkeypatch):
    cpu("avx2", "avx512_bf16")
    assert hardware.resolve_dtype("fp32", "cpu") == ("fp32", "set in the config")
    monkeypatch.setenv(hardware.FORCE_ENV, "0")
    assert hardware.resolve_dtype("auto", "cpu")[0] == "fp32"
    cpu("avx2")
    monkeypatch.setenv(hardware.FORCE_ENV, "1")
    dtype, reason = hardware.resolve_dtype("auto", "cpu")
    assert dtype == "bf16" and hardware.FORCE_ENV in reason


def test_cpu_features_are_recorded_in_run_json(tmp_path, tiny_model, train_file):
    cfg = _cfg(tiny_model, train_file, "gpt_bigcode", "method.name=lora")
    info = json.loads((train(cfg, tmp_path / "r").run_dir / "run.json").read_text())
    features = info["machine"]["cpu_features"]
    assert set(features["flags"]) <= set(hardware.RELEVANT_FLAGS)
    assert features["torch_kernels"] == torch.backends.cpu.get_cpu_capability()
    # the suite forces the fp32 answer (conftest), and run.json says so
    assert info["precision"] == {
        "dtype": "fp32",
        "reason": "auto: CODEPEFT_CPU_BF16=0 forces fp32 on this CPU",
        "weights": "fp32",
        "autocast": "none",
    }


def test_bf16_cpu_trains_lora_on_a_bf16_base_with_fp32_adapters(tmp_path, tiny_model, train_file, cpu, monkeypatch):
    cpu("avx2", "avx512f", "avx512_bf16")
    result = train(_cfg(tiny_model, train_file, "llama", "method.name=lora"), tmp_path / "r")
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["precision"]["dtype"] == "bf16" and "avx512_bf16" in info["precision"]["reason"]
    assert info["precision"]["autocast"] == "bf16" and info["precision"]["weights"] == "bf16"
    base = result.model.get_base_model().model.layers[0].self_attn.q_proj
    assert base.base_layer.weight.dtype == torch.bfloat16
    assert {p.dtype for p in result.model.parameters() if p.requires_grad} == {torch.float32}
    assert result.final_train_loss == result.final_train_loss  # not NaN
    # Reloaded on a machine that would choose fp32: the run's own dtype comes back, not auto's.
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    model, _, _ = load_run(result.run_dir, device="cpu")
    assert model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(input_ids=ids).logits, result.model(input_ids=ids).logits)


@pytest.mark.parametrize("method", ["full", "adapter_pfeiffer"])
def test_bf16_cpu_keeps_trainable_weights_fp32(tmp_path, tiny_model, train_file, cpu, method):
    cpu("avx2", "amx_tile", "amx_bf16")
    extra = ("method.size=8",) if method.startswith("adapter") else ()
    result = train(_cfg(tiny_model, train_file, "llama", f"method.name={method}", *extra), tmp_path / "r")
    precision = json.loads((result.run_dir / "run.json").read_text())["precision"]
    assert precision["autocast"] == "bf16"
    # full fine-tuning keeps fp32 master weights; an adapter is fp32 on a bf16 base
    assert precision["weights"] == ("fp32" if method == "full" else "bf16")
    trainable = [p for p in result.model.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.float32}
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0], losses


def test_4bit_layers_never_take_the_bf16_repacking_path(tiny_model, monkeypatch):
    """On AVX512_BF16 CPUs bitsandbytes rewrites a 4-bit layer in eval mode (bf16 scales, bf16
    matmul) and re-quantises on save, so the trained model was not the saved one. load_model turns
    that path off; with it on (the control) the same forward does rewrite the layer."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.nn.modules as modules

    from codepeft.config import ModelSpec
    from codepeft.models.loading import keep_4bit_layout, load_model

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: True)
    spec = ModelSpec(name_or_path=str(tiny_model("llama")), quantization="4bit", device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])

    def state_after_eval_forward(model):
        layer = model.model.layers[0].self_attn.q_proj
        before = layer.weight.quant_state.absmax.clone()
        with torch.no_grad():
            model.eval()(input_ids=ids)
        state = layer.weight.quant_state
        return before, state

    model, _ = load_model(spec)
    before, state = state_after_eval_forward(model)
    assert state.dtype == torch.float32 and not getattr(state, "packing_format_for_cpu", False)
    assert torch.equal(state.absmax, before)

    control, _ = load_model(spec)
    for m in control.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = True
    _, state = state_after_eval_forward(control)
    assert state.dtype == torch.bfloat16 and state.packing_format_for_cpu
    assert keep_4bit_layout(control) > 0


def test_a_resumed_run_keeps_the_dtype_it_began_with(tmp_path, tiny_model, train_file, cpu):
    cpu("avx2", "avx512_bf16")
    cfg = _cfg(tiny_model, train_file, "llama", "method.name=lora")
    run_json = train(cfg, tmp_path / "r").run_dir / "run.json"
    info = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**info, "status": "running"}))  # as if it had been interrupted
    cpu("avx2")  # resumed on a machine where auto would pick fp32
    resumed = train(cfg, tmp_path / "r", resume=True)
    assert json.loads(run_json.read_text())["precision"] == info["precision"]
    assert info["precision"]["dtype"] == "bf16"
    base = resumed.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert base.weight.dtype == torch.bfloat16
