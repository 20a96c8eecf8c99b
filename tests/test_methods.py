"""Every method on every architecture it applies to: trains, freezes the base, counts, saves,
reloads, merges and generates."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import CORE_ARCHS, SMOLLM2_SLICE
from peft import PeftModel
from safetensors.torch import load_file

from codepeft import load_config, load_run, train
from codepeft.errors import CodepeftError
from codepeft.methods import get_method, merge_model

NAMED = [
    "full",
    "lora",
    "dora",
    "ia3",
    "prompt",
    "prefix",
    "ptuning",
    "adapter_houlsby",
    "adapter_pfeiffer",
    "adapter_parallel",
]
# Every other peft tuner that trains on a plain causal-LM batch (see `codepeft methods` notes for the rest).
GENERIC = [
    "adalora",
    "boft",
    "deft",
    "delora",
    "fourierft",
    "frod",
    "glora",
    "gralora",
    "hira",
    "hra",
    "lily",
    "ln_tuning",
    "loha",
    "lokr",
    "miss",
    "oft",
    "osf",
    "peanut",
    "psoft",
    "pvera",
    "randlora",
    "shadow",
    "shira",
    "supertuning",
    "tinylora",
    "unilora",
    "vera",
    "waveft",
    "beft",
    "vblora",
    "c3a",
    "road",
]
# Options that fit the tiny models' 64-wide layers (the defaults assume widths in the thousands).
TINY_OPTIONS = {
    "shira": ["method.r=4"],
    "waveft": ["method.n_frequency=64"],
    "vblora": ["method.vector_length=16"],
    "c3a": ["method.block_size=16"],
    "road": ["method.group_size=16"],
    "adapter_houlsby": ["method.size=16"],
    "adapter_pfeiffer": ["method.size=16"],
    "adapter_parallel": ["method.size=16"],
}
# FourierFT rebuilds its delta with an inverse FFT scaled by 150: float32 error reaches ~1e-2 in logits.
MERGE_ATOL = {"fourierft": 2e-2}
# peft itself does not support these pairs; the error must still be a clear CodepeftError.
UNSUPPORTED = {("shadow", "t5")}


def _lr(name: str) -> float:
    if name == "adalora":  # singular values start at zero and A, B at std 0.02: slow at small lr
        return 5e-2
    family = get_method(name).family
    return {"full": 3e-3, "prompt": 3e-2, "ia3": 3e-2}.get(family, 1e-2)


def _batch(tok, arch: str, rows) -> dict:
    from codepeft.data.tokenize import Collator, encode

    encdec = arch == "t5"
    items = [encode(tok, r["instruction"], r["output"], 64, "response", encdec) for r in rows]
    batch = Collator(tok.pad_token_id, encdec)(items)
    batch.pop("num_tokens")
    return batch


@torch.no_grad()
def _loss(model, batch) -> float:
    """Language-model loss only (AdaLoRA adds an orthogonality penalty to its loss in forward)."""
    model.eval()
    cfg = model.peft_config.get("default") if isinstance(model, PeftModel) else None
    reg = getattr(cfg, "orth_reg_weight", None)
    if reg is not None:
        cfg.orth_reg_weight = 0.0
    try:
        return model(**batch).loss.item()
    finally:
        if reg is not None:
            cfg.orth_reg_weight = reg


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    """Logits without labels (peft's AdaLoRA cannot compute a loss once reloaded for inference)."""
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if getattr(model.config, "is_encoder_decoder", False):
        labels = batch["labels"].clone()
        labels[labels == -100] = 1  # pad
        start = torch.ones_like(labels[:, :1])  # T5 starts decoding from the pad token
        inputs["decoder_input_ids"] = torch.cat([start, labels[:, :-1]], dim=1)
    return model(**inputs).logits


def _base_state(model) -> dict[str, torch.Tensor]:
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    out = {}
    for k, v in base.state_dict().items():
        out[k.replace(".base_layer", "")] = v
    return out


def _run(tmp_path, tiny_model, train_file, arch: str, name: str, extra=()):
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_model(arch)}",
            f"method.name={name}",
            f"data.train.0.source={train_file}",
            "data.max_length=64",
            "data.format=plain",
            "train.max_steps=8",
            "train.batch_size=8",
            "train.logging_steps=4",
            "train.eval_steps=100",
            "train.save_steps=100",
            "train.warmup=0",
            "train.lr_scheduler=constant",
            f"train.learning_rate={_lr(name)}",
            *TINY_OPTIONS.get(name, []),
            *extra,
        ],
    )
    return train(cfg, tmp_path / f"{arch}-{name}")


CASES = [(a, m) for a in CORE_ARCHS for m in NAMED + GENERIC]


@pytest.mark.numerics
@pytest.mark.parametrize(("arch", "name"), CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_method_on_architecture(tmp_path, tiny_model, tiny_tokenizer, train_file, arch, name):
    check_method(tmp_path, tiny_model, tiny_tokenizer, train_file, arch, name)


# On the real SmolLM2 weights every method family runs in the default suite (about 20 s a
# method on two cores: the 49,152-token vocabulary is most of the cost); the other generic peft
# tuners, already run on every tiny architecture above, are marked slow (pytest -m slow).
SLICE_DEFAULT = {*NAMED, "adalora", "loha", "lokr", "vera"}  # QLoRA: tests/test_smollm2.py
SLICE_CASES = [
    pytest.param(name, marks=() if name in SLICE_DEFAULT else pytest.mark.slow) for name in [*NAMED, *GENERIC]
]


@pytest.mark.parametrize("name", SLICE_CASES)
def test_method_on_the_real_smollm2_weights(tmp_path, tiny_model, tiny_tokenizer, train_file, name):
    """Every method on two layers of the real SmolLM2-135M-Instruct (Llama, vocabulary 49,152,
    width 576, 9 heads / 3 key-value heads, tied embeddings): trains, saves, reloads, merges
    where it can, generates."""
    check_method(tmp_path, tiny_model, tiny_tokenizer, train_file, SMOLLM2_SLICE, name)


def check_method(tmp_path, tiny_model, tiny_tokenizer, train_file, arch, name):
    from helpers import TRAIN_ROWS
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path = tiny_model(arch)
    if (name, arch) in UNSUPPORTED:
        with pytest.raises(CodepeftError):
            _run(tmp_path, tiny_model, train_file, arch, name)
        return
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    batch = _batch(tiny_tokenizer, arch, TRAIN_ROWS[:8])
    before = _loss(auto.from_pretrained(path), batch)

    result = _run(tmp_path, tiny_model, train_file, arch, name)
    model = result.model

    # a few steps on the tiny fixed set lower the loss
    after = _loss(model, batch)
    assert after < before - 1e-3, f"loss did not drop: {before:.4f} -> {after:.4f}"

    # frozen base weights are bit-for-bit unchanged (all of them are found)
    original = load_file(str(path / "model.safetensors"))
    tuned = _base_state(model)
    changed = [k for k, v in original.items() if k in tuned and not torch.equal(v, tuned[k].cpu())]
    missing = [k for k in original if k not in tuned]
    assert not missing, f"base weights not found in the tuned model: {missing[:5]}"
    if name == "full":
        assert changed, "full fine-tuning changed no weight"
    elif name in ("ln_tuning",):
        assert all(re.search(r"(ln|norm)", k) for k in changed), changed  # it tunes the norms, by design
    else:
        assert not changed, f"{name} changed frozen base weights: {changed[:5]}"

    # save then reload gives identical logits
    reloaded, _, info = load_run(result.run_dir, device="cpu")
    assert info["status"] == "completed"
    # (float32 rounding only: AdaLoRA's reloaded inference path orders its matmuls differently;
    # the real weights' logits reach about 20, so their rounding is larger)
    tolerance = 5e-5 if arch == SMOLLM2_SLICE else 1e-5
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch), rtol=tolerance, atol=tolerance)

    # merge, where the method allows it, gives the same logits
    method = get_method(name)
    if method.mergeable:
        expected = _logits(model, batch)
        merged = merge_model(model, name)
        atol = MERGE_ATOL.get(name, 1e-4)
        torch.testing.assert_close(_logits(merged, batch), expected, rtol=1e-4, atol=atol)
        model = merged
    elif method.family != "full":
        with pytest.raises(CodepeftError, match="cannot be merged"):
            merge_model(model, name)

    # generate works on the tuned model
    prompt = tiny_tokenizer("def f(x):\n", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    assert out.shape[-1] >= (1 if arch == "t5" else prompt["input_ids"].shape[-1] + 1)


def _linear_io(module) -> tuple[int, int]:
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    return module.weight.shape[0], module.weight.shape[1]  # transformers Conv1D stores (in, out)


@pytest.mark.parametrize("arch", CORE_ARCHS + ("starcoder2", "gpt2", "gpt_neox"))
def test_lora_parameter_count_is_analytic(tiny_model, arch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from codepeft.config import MethodSpec
    from codepeft.methods import apply_method, count_parameters
    from codepeft.models.architectures import ARCHITECTURES, target_matches

    path = tiny_model(arch)
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    base = auto.from_pretrained(path)
    r = 4
    targets = ARCHITECTURES[arch].linear_targets
    expected = sum(
        r * sum(_linear_io(m))
        for n, m in base.named_modules()
        if not list(m.children())
        and hasattr(m, "weight")
        and any(target_matches(n, t) for t in targets)
        and m.weight.dim() == 2
        and "embed" not in n
        and "wte" not in n
        and "shared" not in n
    )
    tuned = apply_method(base, MethodSpec(name="lora", r=r))
    assert count_parameters(tuned)["trainable_params"] == expected > 0


@pytest.mark.parametrize("arch", CORE_ARCHS)
@pytest.mark.parametrize("name", ["adapter_houlsby", "adapter_pfeiffer", "adapter_parallel"])
def test_bottleneck_parameter_count_is_analytic(tiny_model, arch, name):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from codepeft.config import MethodSpec
    from codepeft.methods import apply_method, count_parameters

    config = AutoConfig.from_pretrained(tiny_model(arch))
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    base = auto.from_pretrained(tiny_model(arch))
    d = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or config.d_model
    blocks = config.num_layers + config.num_decoder_layers if config.is_encoder_decoder else config.num_hidden_layers
    per_block = 2 if name == "adapter_houlsby" else 1
    b = 24
    tuned = apply_method(base, MethodSpec(name=name, size=b))
    assert count_parameters(tuned)["trainable_params"] == blocks * per_block * (2 * d * b + b + d)


def test_bottleneck_starts_as_identity_and_sits_on_sublayers(tiny_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from codepeft.config import MethodSpec
    from codepeft.methods import apply_method

    base = AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    ids = tiny_tokenizer("def f(x): return x", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = base(ids).logits.clone()
    tuned = apply_method(base, MethodSpec(name="adapter_houlsby", size=8))
    names = [n for n, _ in tuned.named_modules() if n.endswith("codepeft_adapter")]
    assert sorted(names) == sorted(
        [f"model.layers.{i}.self_attn.codepeft_adapter" for i in range(2)]
        + [f"model.layers.{i}.mlp.codepeft_adapter" for i in range(2)]
    )
    with torch.no_grad():
        torch.testing.assert_close(tuned(ids).logits, ref)  # zero-initialised up-projection
        for _, m in tuned.named_modules():
            if m.__class__.__name__ == "Bottleneck":
                m.up.weight.fill_(0.01)
        assert not torch.allclose(tuned(ids).logits, ref)  # and the hooks really run


def test_generic_peft_method_options_pass_through(tiny_model):
    from transformers import AutoModelForCausalLM

    from codepeft.config import MethodSpec
    from codepeft.methods import apply_method

    base = AutoModelForCausalLM.from_pretrained(tiny_model("gpt_bigcode"))
    model = apply_method(base, MethodSpec(name="loha", r=2, alpha=4, target_modules=["c_attn"]))
    cfg = model.peft_config["default"]
    assert cfg.r == 2 and cfg.alpha == 4 and set(cfg.target_modules) == {"c_attn"}
