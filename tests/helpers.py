"""Helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

from codepeft import load_config

FIXTURES = Path(__file__).parent / "fixtures"
CORE_ARCHS = ("gpt_bigcode", "llama", "qwen2", "codegen", "t5")
SMOLLM2_SLICE = "smollm2-slice"  # tiny_model's name for two layers of the real SmolLM2 weights


def tiny_llama(tiny_model, dtype=None):
    """(model in eval mode, tokenizer) of the tiny Llama fixture, in `dtype` (default: fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def layer_slice(source: Path, out: Path, layers: int = 2) -> Path:
    """The first `layers` decoder layers of a Llama-architecture model directory, with its real
    embeddings, norm, tokenizer and chat template: the real shapes and vocabulary, a fraction
    of the compute."""
    import shutil

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    config.num_hidden_layers = layers
    model = AutoModelForCausalLM.from_config(config)
    state = load_file(str(source / "model.safetensors"))
    kept = {k: v for k, v in state.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # lm_head is tied
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TRAIN_ROWS = [
    {"instruction": f'def add_{i}(x):\n    """Return x plus {i}."""\n', "output": f"    return x + {i}\n"}
    for i in range(24)
]


def tiny_run_config(tiny_model, train_file, arch="gpt_bigcode", *extra):
    """A few-step run of a tiny model on the tiny instruction set; `extra` are `--set` overrides."""
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_model(arch)}",
            f"data.train.0.source={train_file}",
            "data.format=plain",
            "data.max_length=64",
            "train.batch_size=4",
            "train.max_steps=6",
            "train.logging_steps=2",
            "train.eval_steps=3",
            "train.save_steps=3",
            "train.learning_rate=1e-2",
            *extra,
        ],
    )


def run_eval(model_dir, tasks: str, out: Path, *extra: str):
    """`codepeft eval` as a user runs it; returns the printed output and each task's result file."""
    from typer.testing import CliRunner

    from codepeft.cli import app

    result = CliRunner().invoke(app, ["eval", str(model_dir), "--tasks", tasks, "--output-dir", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output, {t: json.loads((out / f"{t}.json").read_text()) for t in tasks.split(",")}
