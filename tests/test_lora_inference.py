"""LoRA layers at generation time (codepeft.generation.lora_inference): bit for bit what peft's
single-adapter forward computes, peft's forward wherever it is not covered, and what the backend
generates with. (Mixed batches: tests/test_together.py.)"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_llama

from codepeft.generation import GenerationSettings, HFBackend, backends
from codepeft.generation.lora_inference import lean_lora


def _lora_model(tiny_model, dtype, **options):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base, _ = tiny_llama(tiny_model, dtype)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False, **options)
    model = get_peft_model(base, config)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # fp32 adapters, on a bf16 base too (codepeft's layout there)
    return model.eval()


def _patched(model) -> int:
    return sum("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_lean_forward_gives_pefts_numbers_bit_for_bit(tiny_model, dtype):
    model = _lora_model(tiny_model, dtype, lora_dropout=0.1)
    ids = torch.randint(3, 200, (3, 12))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with lean_lora(model):
            assert _patched(model) == 3 * model.config.num_hidden_layers
            got = model(input_ids=ids).logits
    assert torch.equal(got, want) and _patched(model) == 0


def test_what_it_does_not_cover_keeps_pefts_forward(tiny_model):
    dora = _lora_model(tiny_model, torch.float32, use_dora=True)
    with lean_lora(dora):
        assert _patched(dora) == 0
    model = _lora_model(tiny_model, torch.float32)
    ids = torch.randint(3, 200, (2, 8))
    with lean_lora(model):
        model(input_ids=ids).logits.sum().backward()  # autograd on: peft's forward, gradients flow
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        with lean_lora(model), model.disable_adapter():
            plain = model(input_ids=ids).logits
        with model.disable_adapter():
            assert torch.equal(plain, model(input_ids=ids).logits)  # adapters off: the base alone
        assert not torch.equal(plain, model(input_ids=ids).logits)


def test_the_backend_generates_with_it(tiny_model, monkeypatch):
    from peft.tuners.lora.layer import Linear

    model = _lora_model(tiny_model, torch.float32)
    _, tok = tiny_llama(tiny_model)
    calls = []
    real = Linear.forward
    monkeypatch.setattr(Linear, "forward", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    settings = GenerationSettings(n=1, temperature=0.0, max_new_tokens=5, batch_size=2)
    lean = HFBackend(model, tok).generate(["def f(x):", "x = 1"], settings, progress=False)
    assert calls == []  # peft's forward never ran
    monkeypatch.setattr(backends, "lean_lora", lambda model: torch.no_grad())
    assert HFBackend(model, tok).generate(["def f(x):", "x = 1"], settings, progress=False) == lean
    assert calls  # without it, peft's forward runs, and gives the same texts
