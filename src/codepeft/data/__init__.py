"""Datasets: sources (built-in, files, hub), prompt formats, tokenization, packing, mixing."""

from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset, interleave_datasets

from codepeft.config import DatasetSpec, DataSpec
from codepeft.data.builtin import BUILTINS, get_builtin
from codepeft.data.formats import render
from codepeft.data.records import FILE_SUFFIXES, normalize, read_file, read_hub
from codepeft.data.tokenize import Collator, encode, pack
from codepeft.errors import CodepeftError

__all__ = ["BUILTINS", "Collator", "build_datasets", "load_examples", "source_name"]
HELD_OUT_FRACTION = 0.05


def source_name(spec: DatasetSpec) -> str:
    return Path(spec.source).stem if spec.source.endswith(FILE_SUFFIXES) else spec.source


def _is_file(source: str) -> bool:
    return source.lower().endswith(FILE_SUFFIXES) or Path(source).exists()


def has_split(spec: DatasetSpec, split: str) -> bool:
    builtin = get_builtin(spec.source)
    if builtin is not None:
        return builtin.has_split(split, spec.data_files)
    return not _is_file(spec.source)  # a hub id: ask the hub


def load_examples(spec: DatasetSpec, split: str | None = None) -> list[dict]:
    """Normalised examples of one source and split (the spec's training split by default)."""
    split = split or spec.split
    builtin = get_builtin(spec.source)
    if builtin is not None:
        if spec.fields:
            raise CodepeftError(f"data source {spec.source!r} is built in; its fields are known (drop 'fields')")
        examples = [rec for _, rec in builtin.records(split, spec.data_files)]
    else:
        raw = read_file(Path(spec.source)) if _is_file(spec.source) else read_hub(spec.source, split, spec.subset)
        examples = [normalize(rec, where, spec.fields) for where, rec in raw]
    if not examples:
        raise CodepeftError(f"data source {spec.source!r} split {split!r} holds no usable examples")
    return examples[: spec.limit] if spec.limit else examples


def _train_and_eval_examples(spec: DatasetSpec, seed: int) -> tuple[list[dict], list[dict]]:
    train = load_examples(spec)
    if spec.eval_split and has_split(spec, spec.eval_split):
        try:
            return train, load_examples(spec, spec.eval_split)
        except CodepeftError:
            pass  # no such split on the hub: hold out part of train instead
    rng = random.Random(seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    n_eval = max(1, int(len(train) * HELD_OUT_FRACTION)) if len(train) > 1 else 0
    held = set(order[:n_eval])
    return [e for i, e in enumerate(train) if i not in held], [e for i, e in enumerate(train) if i in held]


def _encode_all(examples, spec: DataSpec, tokenizer, encoder_decoder: bool) -> list[dict]:
    encoded = []
    for ex in examples:
        prompt, response = render(spec.format, ex, tokenizer)
        item = encode(tokenizer, prompt, response, spec.max_length, spec.loss_on, encoder_decoder)
        if item is not None:
            encoded.append(item)
    return encoded


def build_datasets(spec: DataSpec, tokenizer, encoder_decoder: bool, seed: int = 0):
    """Tokenized (train, eval) datasets; eval is a dict by source name when there are several."""
    if spec.packing is True and encoder_decoder:
        raise CodepeftError("data.packing is for decoder-only models; an encoder-decoder model reads one example")
    trains, evals = [], {}
    for src in spec.train:
        train_ex, eval_ex = _train_and_eval_examples(src, seed)
        rng = random.Random(seed)
        rng.shuffle(train_ex)
        encoded = _encode_all(train_ex, spec, tokenizer, encoder_decoder)
        if not encoded:
            raise CodepeftError(f"every example of {src.source!r} is longer than data.max_length={spec.max_length}")
        if spec.packing is True:
            encoded = pack(encoded, spec.max_length)
        trains.append(Dataset.from_list(encoded))
        eval_ex = eval_ex if spec.eval_limit is None else eval_ex[: spec.eval_limit]
        eval_encoded = _encode_all(eval_ex, spec, tokenizer, encoder_decoder)
        if eval_encoded:
            evals[source_name(src)] = Dataset.from_list(eval_encoded)
    if len(trains) == 1:
        train = trains[0]
    else:
        weights = [s.weight for s in spec.train]
        probs = [w / sum(weights) for w in weights]
        train = interleave_datasets(trains, probabilities=probs, seed=seed, stopping_strategy="all_exhausted")
    eval_ds = next(iter(evals.values())) if len(evals) == 1 else (evals or None)
    return train, eval_ds
