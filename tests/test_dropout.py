"""codepeft's CPU dropout: the right drop rate, independent elements, torch's contract, seeded
masks, and training that follows torch's dropout."""

from __future__ import annotations

import json

import pytest
import torch

from codepeft.training import dropout as fast
from codepeft.training import varlen


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_drop_rate_is_p_in_every_lane(p):
    torch.manual_seed(0)
    keep = fast.keep_mask((1_000_003,), p)
    assert keep.dtype == torch.bool and keep.shape == (1_000_003,)
    sigma = (p * (1 - p) / keep.numel()) ** 0.5
    assert abs((~keep).float().mean().item() - p) < 5 * sigma
    # Each of the four 16-bit lanes of a 64-bit draw drops at the same rate.
    lanes = (~keep[:1_000_000]).view(-1, 4).float().mean(0)
    assert (lanes - p).abs().max().item() < 5 * sigma * 2


def test_neighbouring_decisions_are_independent():
    torch.manual_seed(1)
    keep = fast.keep_mask((2_000_000,), 0.3).float()
    for lag in (1, 2, 3, 4, 5, 8):
        corr = torch.corrcoef(torch.stack([keep[:-lag], keep[lag:]]))[0, 1].item()
        assert abs(corr) < 0.005, (lag, corr)


def test_forward_and_backward_follow_the_mask():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(2)
    y = fast.dropout(x, 0.25)
    torch.manual_seed(2)
    keep = fast.keep_mask(x.shape, 0.25)
    torch.testing.assert_close(y, x.detach() * keep / 0.75)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, w * keep / 0.75)


def test_same_contract_as_torch_dropout():
    x = torch.randn(10, 10)
    assert fast.dropout(x, 0.1, training=False) is x
    assert fast.dropout(x, 0.0) is x
    assert torch.equal(fast.dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(3)
    a = fast.dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, fast.dropout(x, 0.5))  # the seed decides the mask
    assert not torch.equal(a, fast.dropout(x, 0.5))  # and each call draws a new one


def test_models_dropout_modules_are_patched_only_inside_the_block(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model("gpt_bigcode")).train()
    drops = [m for m in model.modules() if type(m) is torch.nn.Dropout and m.p > 0]
    assert drops
    calls = []
    real = fast.keep_mask
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "keep_mask", lambda shape, p, device: calls.append(p) or real(shape, p, device))
        ids = torch.randint(0, 100, (1, 12))
        with fast.fast_dropout_enabled(model):
            assert fast.active()
            model(input_ids=ids)
        assert len(calls) == len(drops)
        assert not fast.active() and all("forward" not in vars(m) for m in drops)
        model(input_ids=ids)  # torch's dropout again
        assert len(calls) == len(drops)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_per_example_attention_with_dropout_is_sdpa_with_that_mask(kv_heads):
    """The unfused attention used when dropout is on equals SDPA without dropout when p=0, and
    applies exactly the drawn mask to the attention weights otherwise."""
    torch.manual_seed(4)
    q = torch.randn(1, 4, 9, 8)
    k, v = torch.randn(1, kv_heads, 9, 8), torch.randn(1, kv_heads, 9, 8)
    k4, v4 = varlen.repeat_kv(k, 4 // kv_heads), varlen.repeat_kv(v, 4 // kv_heads)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k4, v4, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(varlen._causal_attention(q, k4, v4, 8**-0.5, 0.0), plain)

    module = torch.nn.Module()
    bounds = torch.tensor([0, 4, 9])
    torch.manual_seed(5)
    with fast.fast_dropout_enabled(module):
        out, _ = varlen.varlen_attention(module, q, k, v, None, dropout=0.2, scaling=8**-0.5, cu_seq_lens_q=bounds)
    torch.manual_seed(5)
    expected = []
    for s, e in ((0, 4), (4, 9)):
        n = e - s
        scores = q[:, :, s:e] @ k4[:, :, s:e].transpose(-1, -2) * 8**-0.5
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        keep = fast.keep_mask((1, 4, n, n), 0.2)
        expected.append((torch.softmax(scores, -1) * keep / 0.8 @ v4[:, :, s:e]).transpose(1, 2))
    torch.testing.assert_close(out, torch.cat(expected, dim=1))


def test_training_with_codepeft_dropout_follows_torch_dropout(tmp_path, tiny_model, train_file):
    """Same data, same seed: the loss curve with codepeft's masks stays close to torch's (the masks
    differ, the distribution does not), and run.json says which dropout ran."""
    from codepeft import load_config, train

    def run(name, flag):
        cfg = load_config(
            None,
            [
                f"model.name_or_path={tiny_model('gpt_bigcode')}",
                f"data.train.0.source={train_file}",
                "data.format=plain",
                "data.max_length=64",
                "train.batch_size=4",
                "train.max_steps=24",
                "train.logging_steps=4",
                "train.save_steps=100",
                "train.learning_rate=5e-3",
                f"train.fast_dropout={flag}",
                "method.lora_dropout=0.1",
            ],
        )
        result = train(cfg, tmp_path / name)
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r], json.loads((result.run_dir / "run.json").read_text())

    ours, info = run("fast", "true")
    theirs, info_torch = run("torch", "false")
    assert info["data"]["dropout"].startswith("codepeft") and info_torch["data"]["dropout"] == "torch"
    assert ours[-1] < ours[0] * 0.9 and theirs[-1] < theirs[0] * 0.9
    assert ours != theirs  # different masks
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a - b) / b < 0.05, (ours, theirs)
