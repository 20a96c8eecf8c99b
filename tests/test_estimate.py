"""`codepeft estimate`: exact parameter counts from the config alone, memory that moves the right
way with each setting, and advice that fits. (Its accuracy against measured peaks is a benchmark:
benchmarks/estimate_memory.py.)"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from codepeft.cli import app
from codepeft.errors import CodepeftError
from codepeft.estimate import GB, estimate, suggest


@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "t5"])
@pytest.mark.parametrize("method", ["full", "lora", "ia3", "prompt", "adapter_houlsby"])
def test_counts_equal_a_real_model(tiny_model, arch, method):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from codepeft.methods import ApplyContext, count_parameters, get_method

    path = tiny_model(arch)
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    m = get_method(method)
    real = count_parameters(m.apply(auto.from_pretrained(path), m.options({}), ApplyContext(tokenizer_path=str(path))))
    est = estimate(str(path), method, seq_len=64, batch=2, dtype="fp32", device="cpu")
    assert (est.trainable_params, est.total_params) == (real["trainable_params"], real["total_params"])


def _bytes_kept(model, **inputs) -> int:
    """Bytes a real forward pass of `model` keeps for backward: distinct storages, parameters excluded."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs, use_cache=False)
    return sum(kept.values())


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "qwen2", "codegen", "t5"])
@pytest.mark.parametrize("method", ["full", "lora", "ptuning", "adapter_houlsby"])
def test_traced_activations_are_what_a_real_forward_pass_keeps(tiny_model, arch, method):
    """The meta-device trace counts the bytes a real CPU training forward pass keeps for
    backward (distinct storages, parameters excluded), with the attention kernel CPU picks."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from codepeft.estimate import _dims, _meta_model, traced_activations
    from codepeft.methods import ApplyContext, get_method

    path = tiny_model(arch)
    config = AutoConfig.from_pretrained(path)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    m = get_method(method)
    real = m.apply(auto.from_pretrained(path), m.options({}), ApplyContext(tokenizer_path=str(path))).train()
    ids = torch.randint(3, 100, (3, 40))
    inputs = {"input_ids": ids, **({"decoder_input_ids": ids} if config.is_encoder_decoder else {})}
    kept = _bytes_kept(real, **inputs)
    meta = m.apply(_meta_model(config), m.options({}), ApplyContext(tokenizer_path=str(path)))
    fused = real.config._attn_implementation == "sdpa" and not _dims(config)["attention_dropout"]
    traced, logits = traced_activations(meta, 3, 40, fused)
    assert traced == pytest.approx(kept, rel=1e-3)
    assert logits == real(**inputs).logits.numel()


@pytest.mark.parametrize("fast_dropout", [True, False])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_a_cpu_estimate_traces_what_cpu_training_keeps(tiny_model, method, fast_dropout):
    """The activations `codepeft estimate --device cpu` counts are the bytes CPU training's forward
    pass keeps, with its kernels as `train.fast_dropout` sets them: LoRA over plain linear layers
    through codepeft's kernel, over bitsandbytes' 4-bit layers through peft's forward (it keeps
    each dropped input), dropout masks as bools (codepeft's) or floats (torch's CPU dropout)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from codepeft.methods import ApplyContext, get_method
    from codepeft.training.runner import training_kernels

    path = str(tiny_model("llama"))
    options = {"lora_dropout": 0.1, **({"bits": 4} if method == "qlora" else {})}
    kwargs = {"dtype": torch.float32}
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
        kwargs |= {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)}
    m = get_method(method)
    loaded = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    real = m.apply(loaded, m.options(options), ApplyContext(quantized=method == "qlora")).train()
    with training_kernels(real, varlen=False, fast_dropout=fast_dropout):
        kept = _bytes_kept(real, input_ids=torch.randint(3, 100, (2, 48)))
    est = estimate(path, method, options, seq_len=48, batch=2, dtype="fp32", device="cpu", fast_dropout=fast_dropout)
    assert est.activations_bytes == pytest.approx(kept, rel=1e-3)


def test_memory_moves_the_right_way(tiny_model):
    path = str(tiny_model("llama"))
    lora = estimate(path, "lora", seq_len=256, batch=4)
    assert estimate(path, "qlora", seq_len=256, batch=4).weights_bytes < lora.weights_bytes
    assert estimate(path, "full", seq_len=256, batch=4).trainable_state_bytes > lora.trainable_state_bytes
    ckpt = estimate(path, "lora", seq_len=256, batch=4, gradient_checkpointing=True)
    assert ckpt.activations_bytes < lora.activations_bytes
    double = estimate(path, "lora", seq_len=256, batch=8)
    # (all but the rotary tables, which do not grow with the batch)
    assert double.activations_bytes == pytest.approx(2 * lora.activations_bytes, rel=0.01)
    # training's chunked loss (train.loss_chunk, 1024 targets) holds one chunk's logits at a time
    assert double.logits_bytes == lora.logits_bytes
    whole = estimate(path, "lora", seq_len=256, batch=4, loss_chunk=0)
    # 4 x 256 targets, one chunk: its fp32 logits become their gradient in place, where the
    # model's own loss keeps the log-softmax and holds two gradients besides
    assert lora.logits_bytes < whole.logits_bytes
    assert estimate(path, "lora", seq_len=256, batch=8, loss_chunk=0).logits_bytes == 2 * whole.logits_bytes
    assert estimate(path, "lora", seq_len=256, batch=4, loss_chunk=256).logits_bytes == lora.logits_bytes / 4
    assert double.weights_bytes == lora.weights_bytes
    assert estimate(path, "lora", seq_len=256, batch=4, device="cpu").runtime_bytes == 0
    assert lora.runtime_bytes > 0  # the CUDA context


def test_a_quantised_base_on_cpu_is_estimated_as_bitsandbytes_cpu_backend_holds_it(tiny_model):
    """On a GPU a 4-bit base saves memory; bitsandbytes' CPU backend keeps the base
    in the compute dtype beside the quantised copy (benchmarks/memory_methods.py measures it)."""
    path = str(tiny_model("llama"))
    kw = dict(seq_len=128, batch=2, dtype="fp32")
    lora_cpu, lora_gpu = estimate(path, "lora", device="cpu", **kw), estimate(path, "lora", device="cuda", **kw)
    q4_cpu, q4_gpu = estimate(path, "qlora", device="cpu", **kw), estimate(path, "qlora", device="cuda", **kw)
    q8_cpu = estimate(path, "qlora", {"bits": 8}, device="cpu", **kw)
    assert q4_gpu.weights_bytes < lora_gpu.weights_bytes
    assert lora_cpu.weights_bytes < q4_cpu.weights_bytes < q8_cpu.weights_bytes
    assert q8_cpu.weights_bytes - lora_cpu.weights_bytes == pytest.approx(
        32 / 4.127 * (q4_cpu.weights_bytes - lora_cpu.weights_bytes), rel=1e-6
    )
    text = CliRunner().invoke(app, ["estimate", "--model", path, "--method", "qlora", "--device", "cpu"]).output
    assert "peak training memory on the CPU" in text and "saves no memory there" in " ".join(text.split())


def test_suggestions_fit_the_budget(tiny_model):
    path = str(tiny_model("llama"))
    kwargs = dict(model=path, method="full", seq_len=2048, batch=8, device="cpu")
    plain = estimate(**kwargs)
    ckpt = estimate(**kwargs, gradient_checkpointing=True)
    budget = (ckpt.peak_bytes + plain.peak_bytes) / 2 / GB
    words, fits = suggest(budget, **kwargs)
    assert words == "turn on gradient checkpointing" and fits.peak_bytes <= budget * GB
    assert suggest(1e-6, **kwargs) is None


def test_estimate_cli(tiny_model):
    runner = CliRunner()
    path = str(tiny_model("gpt_bigcode"))
    out = runner.invoke(app, ["estimate", "--model", path, "--method", "lora", "--method-opt", "r=4", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["with_checkpointing"]["peak_bytes"] < data["without_checkpointing"]["peak_bytes"]
    r8 = estimate(path, "lora").trainable_params
    assert data["without_checkpointing"]["trainable_params"] == r8 // 2  # LoRA parameters scale with r
    big = dict(seq_len=4096, batch=4)
    between = (
        (
            estimate(path, "lora", **big).peak_bytes
            + estimate(path, "lora", **big, gradient_checkpointing=True).peak_bytes
        )
        / 2
        / GB
    )
    args = ["estimate", "--model", path, "--seq-len", "4096", "--batch", "4", "--memory", f"{between:.3f}"]
    text = runner.invoke(app, args)
    assert text.exit_code == 0
    budget = float(f"{between:.3f}")  # (the CLI prints the budget as given: 0.54, not 0.540)
    assert f"does not fit in {budget:g} GB; cheapest change that fits: turn on gradient checkpointing" in " ".join(
        text.output.split()
    )
    bad = runner.invoke(app, ["estimate", "--model", path, "--method", "icl"])
    assert bad.exit_code == 2 and "trains nothing" in bad.output
    with pytest.raises(CodepeftError, match="model directory not found: /no/such/model"):
        estimate("/no/such/model")


def test_a_cpu_estimate_follows_the_runs_lora_kernel_setting(tiny_model):
    """On a CPU, training's LoRA kernel (train.fast_dropout, the default) keeps one input per
    block where peft's forward keeps a dropped copy per layer: `--no-fast-dropout` estimates the
    latter, and only for the CPU (a GPU run uses peft's forward either way)."""
    path = str(tiny_model("llama"))
    kw = dict(seq_len=256, batch=4, dtype="fp32", method_options={"lora_dropout": 0.1})
    kernel = estimate(path, "lora", device="cpu", **kw)
    peft = estimate(path, "lora", device="cpu", fast_dropout=False, **kw)
    assert peft.activations_bytes > kernel.activations_bytes
    assert (
        estimate(path, "lora", device="cuda", fast_dropout=False, **kw).activations_bytes
        == estimate(path, "lora", device="cuda", **kw).activations_bytes
    )
    args = ["estimate", "--model", path, "--device", "cpu", "--dtype", "fp32", "--seq-len", "256", "--batch", "4",
            "--method-opt", "lora_dropout=0.1", "--json"]  # fmt: skip
    cli = [json.loads(CliRunner().invoke(app, args + extra).output) for extra in ([], ["--no-fast-dropout"])]
    assert [c["without_checkpointing"]["activations_bytes"] for c in cli] == [
        kernel.activations_bytes,
        peft.activations_bytes,
    ]
