"""Helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from codepeft import load_config


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
