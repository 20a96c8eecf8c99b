"""bf16 decode steps of SmolLM2-135M-Instruct on a CPU: transformers' SDPA attention (torch's flash
kernel) against `codepeft.generation.decode_attention`, in time and in agreement with fp32; and
LoRA layers in a step, peft's forward against `codepeft.generation.lora_inference`.

A diagnostic behind the figures in those modules' docstrings and benchmarks/NOTES.md:
  - one layer's attention for 8 and 48 one-token queries over 151 cached tokens (9 query heads
    over 3 key/value heads, head size 64), bf16 and fp32;
  - a whole decode step (oneDNN-packed weights, as the backend generates) for 8 and 48 rows,
    with SDPA, transformers' eager attention and codepeft's;
  - against the fp32 model: 8 HumanEval prompts with their reference solutions, 60 tokens of
    prefill, then 60 decode steps fed the text's own next token; how often each bf16 attention
    picks fp32's next token, and the mean KL divergence from fp32's distribution;
  - six rank-8 LoRA adapters on every linear layer (random, not trained): a step of 8 rows of
    one adapter and of 48 rows, 8 of each adapter in a mixed batch, with peft's forward and
    with codepeft's (codepeft's attention and packed weights in both).
About two minutes on two cores.

    .venv/bin/python benchmarks/decode_step.py
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

IMPLEMENTATIONS = ("sdpa", "eager", "codepeft")


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


def one_layer() -> dict:
    from codepeft.generation import decode_attention as da

    module = type("Attention", (), {"num_key_value_groups": 3, "is_causal": True})()
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        for rows in (8, 48):
            q = torch.randn(rows, 9, 1, 64, dtype=dtype)
            k, v = torch.randn(rows, 3, 151, 64, dtype=dtype), torch.randn(rows, 3, 151, 64, dtype=dtype)
            key = f"{str(dtype).removeprefix('torch.')}, {rows} rows"
            out[key] = {
                "sdpa_ms": _median_ms(functools.partial(F.scaled_dot_product_attention, q, k, v, enable_gqa=True), 50),
                "codepeft_ms": _median_ms(functools.partial(da.attention, module, q, k, v, None), 50),
            }
    return out


def _model(dtype: str):
    from codepeft.config import ModelSpec
    from codepeft.models.loading import load_model

    return load_model(ModelSpec(name_or_path="smollm2-135m", dtype=dtype, device="cpu"))


@contextlib.contextmanager
def _attention(model, name: str):
    from codepeft.generation import decode_attention as da
    from codepeft.models.loading import attention_implementation

    if name == "codepeft":
        with da.enabled(model):
            yield
    else:
        with attention_implementation(model, name):
            yield


def _decode_times(model, ids, contexts: dict, extra: dict | None = None, rounds: int = 3) -> dict:
    """Median time (ms) of a decode step over 151 positions under each context, the contexts
    taking turns `rounds` times (this machine's speed drifts within minutes)."""
    from transformers import DynamicCache

    from codepeft.generation.packed_linear import PackedLinears

    packed, extra = PackedLinears(), extra or {}
    times: dict[str, list[float]] = {name: [] for name in contexts}
    for _ in range(rounds):
        for name, context in contexts.items():
            with torch.no_grad(), packed.enabled(model), context():
                cache = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1, **extra)
                cache = cache.past_key_values

                def decode(cache=cache):
                    model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True, **extra)
                    cache.crop(-1)  # the same 151 positions every time

                times[name].append(_median_ms(decode, 7))
    return {f"{name}_ms": sorted(t)[len(t) // 2] for name, t in times.items()}


def whole_steps(model) -> dict:
    contexts = {name: functools.partial(_attention, model, name) for name in IMPLEMENTATIONS}
    return {f"{rows} rows": _decode_times(model, _ids(rows), contexts) for rows in (8, 48)}


def _ids(rows: int) -> torch.Tensor:
    return torch.randint(0, 40000, (rows, 150), generator=torch.Generator().manual_seed(0))


def agreement(model) -> dict:
    from transformers import DynamicCache

    from codepeft.tasks import get_task

    reference, tok = _model("fp32")
    texts = [p["prompt"] + p["canonical_solution"] for p in get_task("humaneval").problems()]
    ids = [tok(t, return_tensors="pt")["input_ids"][0] for t in texts]
    ids = torch.stack([i[:120] for i in ids if len(i) >= 120][:8])

    def logits(net):
        with torch.no_grad():
            out = net(input_ids=ids[:, :60], past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
            steps, cache = [out.logits[:, -1].float()], out.past_key_values
            for s in range(60, 119):
                out = net(input_ids=ids[:, s : s + 1], past_key_values=cache, use_cache=True)
                steps.append(out.logits[:, -1].float())
        return torch.stack(steps, 1)

    want = logits(reference)
    result = {}
    for name in IMPLEMENTATIONS:
        with _attention(model, name):
            got = logits(model)
        p, q = torch.log_softmax(want, -1), torch.log_softmax(got, -1)
        result[name] = {
            "next_token_agreement": (got.argmax(-1) == want.argmax(-1)).float().mean().item(),
            "mean_kl": (p.exp() * (p - q)).sum(-1).mean().item(),
        }
    return result


def lora_steps(model) -> dict:
    from peft import LoraConfig, get_peft_model

    from codepeft.generation import decode_attention as da
    from codepeft.generation.lora_inference import lean_lora

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(model, config, adapter_name="a0")
    for i in range(1, 6):
        model.add_adapter(f"a{i}", config)
    model.eval()
    mixed = [f"a{i}" for i in range(6) for _ in range(8)]

    def lean():
        stack = contextlib.ExitStack()
        stack.enter_context(da.enabled(model))
        stack.enter_context(lean_lora(model))
        return stack

    contexts = {"peft": lambda: da.enabled(model), "codepeft": lean}
    return {
        "8 rows, one adapter": _decode_times(model, _ids(8), contexts),
        "48 rows, six adapters mixed": _decode_times(model, _ids(48), contexts, {"adapter_names": mixed}),
    }


def main() -> None:
    torch.manual_seed(0)
    model, _ = _model("bf16")
    result = {"machine": machine(), "one_layer": one_layer(), "steps": whole_steps(model), "fp32": agreement(model)}
    result["lora"] = lora_steps(model)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
