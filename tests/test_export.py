"""`codepeft export RUN --merged OUT`: a merged model that computes as base + adapter, and a clear
refusal where a method has nothing to merge."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_run_config
from typer.testing import CliRunner

from codepeft import load_run, train
from codepeft.cli import app

runner = CliRunner()


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_a_merged_model_computes_as_base_plus_adapter(tmp_path, tiny_model, train_file, method):
    from transformers import AutoModelForCausalLM

    run = train(tiny_run_config(tiny_model, train_file, "llama", f"method.name={method}"), tmp_path / "run")
    result = runner.invoke(app, ["export", str(run.run_dir), "--merged", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert "merged into the base" in " ".join(result.output.split())
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()  # plain transformers, no peft
    assert not any("lora" in n or "ia3" in n for n, _ in merged.named_parameters())
    tuned, _, _ = load_run(run.run_dir, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "library_name: transformers" in card and f"A {method} adapter merged into" in card
    # the output directory is never overwritten
    again = runner.invoke(app, ["export", str(run.run_dir), "--merged", str(tmp_path / "merged")])
    assert again.exit_code == 2 and "not empty" in again.output


@pytest.mark.parametrize(("method", "why"), [("prompt", "virtual tokens"), ("adapter_pfeiffer", "bottleneck layers")])
def test_methods_without_weights_to_merge_say_why(tmp_path, tiny_model, train_file, method, why):
    run = train(tiny_run_config(tiny_model, train_file, "llama", f"method.name={method}"), tmp_path / "run")
    result = runner.invoke(app, ["export", str(run.run_dir), "--merged", str(tmp_path / "merged")])
    assert result.exit_code == 2
    assert why in " ".join(result.output.split())
    assert not (tmp_path / "merged").exists()


def test_full_fine_tuning_exports_its_weights(tmp_path, tiny_model, train_file):
    run = train(tiny_run_config(tiny_model, train_file, "gpt_bigcode", "method.name=full"), tmp_path / "run")
    result = runner.invoke(app, ["export", str(run.run_dir), "--merged", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "gpt_bigcode"


def test_a_qlora_adapter_is_merged_into_the_unquantised_base(tmp_path, tiny_model, train_file):
    pytest.importorskip("bitsandbytes")
    run = train(tiny_run_config(tiny_model, train_file, "llama", "method.name=qlora"), tmp_path / "run")
    result = runner.invoke(app, ["export", str(run.run_dir), "--merged", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "trained on a 4bit base" in said and "unquantised" in said
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
