"""The offline default model: a small StarCoder-architecture (GPTBigCode) model pre-trained on
the Python standard library with a byte-level BPE tokenizer trained on the same corpus.

Deterministic from its spec (seed included), built once and cached under the user cache
directory; `codepeft bootstrap` builds it with a progress bar and reports held-out loss on
standard-library packages it never trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM, get_cosine_schedule_with_warmup

from codepeft.corpus import split_of, stdlib_files
from codepeft.models.builtin import build_once
from codepeft.models.tokenizer import train_bpe_tokenizer
from codepeft.paths import cache_dir

INFO_FILE = "bootstrap.json"


@dataclass(frozen=True)
class BootstrapSpec:
    vocab_size: int = 8192
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 8
    seq_len: int = 256
    batch_size: int = 8
    tokens: int = 786_432  # training token budget: 384 steps of 8 x 256, about 8 minutes on 2 cores
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.05
    eval_tokens: int = 65_536
    seed: int = 0

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True) + f"py{sys.version_info[0]}.{sys.version_info[1]}"
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def default_spec() -> BootstrapSpec:
    tokens = os.environ.get("CODEPEFT_BOOTSTRAP_TOKENS")
    return BootstrapSpec(tokens=int(tokens)) if tokens else BootstrapSpec()


def model_dir(spec: BootstrapSpec) -> Path:
    return cache_dir() / "models" / f"stdlib-starcoder-{spec.key()}"


def ensure_default_model(spec: BootstrapSpec | None = None, force: bool = False, progress: bool = True) -> Path:
    """Path of the cached default model, building it first if needed."""
    spec = spec or default_spec()
    return build_once(model_dir(spec), INFO_FILE, lambda tmp: build(spec, tmp, progress=progress), force)


def _blocks(token_ids: list[int], seq_len: int) -> torch.Tensor:
    n = len(token_ids) // seq_len
    return torch.tensor(token_ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def _corpus_tokens(tokenizer, texts: list[str], limit: int) -> list[int]:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer  # the Rust tokenizer: no length warnings, batch-parallel
    for start in range(0, len(texts), 64):
        for enc in backend.encode_batch(texts[start : start + 64], add_special_tokens=False):
            ids.extend(enc.ids)
            ids.append(eos)
        if len(ids) >= limit:
            break
    return ids[:limit]


@torch.no_grad()
def heldout_loss(model, blocks: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        batch = blocks[i : i + batch_size]
        out = model(input_ids=batch, labels=batch)
        n = batch.numel() - batch.shape[0]
        total += out.loss.item() * n
        count += n
    return total / max(count, 1)


def build(spec: BootstrapSpec, out: Path, progress: bool = True) -> dict:
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    files = stdlib_files()
    train_texts = [f.read() for f in files if split_of(f.module) == "train"]
    held_texts = [f.read() for f in files if split_of(f.module) == "valid"]
    random.Random(spec.seed).shuffle(train_texts)

    tokenizer = train_bpe_tokenizer(train_texts, spec.vocab_size)
    steps = max(1, spec.tokens // (spec.batch_size * spec.seq_len))
    train_blocks = _blocks(
        _corpus_tokens(tokenizer, train_texts, steps * spec.batch_size * spec.seq_len + spec.seq_len),
        spec.seq_len,
    )
    train_blocks = train_blocks[torch.randperm(len(train_blocks), generator=torch.Generator().manual_seed(spec.seed))]
    held_blocks = _blocks(_corpus_tokens(tokenizer, held_texts, spec.eval_tokens), spec.seq_len)

    config = GPTBigCodeConfig(
        vocab_size=len(tokenizer),
        n_positions=spec.seq_len * 2,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        multi_query=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPTBigCodeForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(steps * spec.warmup_fraction), steps)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="pre-training default model", unit="step", disable=not progress)
    for step in bar:
        start = (step * spec.batch_size) % len(train_blocks)
        batch = train_blocks[start : start + spec.batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    held = heldout_loss(model, held_blocks, spec.batch_size)
    info = {
        "spec": asdict(spec),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": steps * spec.batch_size * spec.seq_len,
        "steps": steps,
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "heldout_loss": held,
        "heldout_perplexity": math.exp(held),
        "heldout_tokens": int(held_blocks.numel()),
        "heldout_modules": "standard-library packages of the 'valid' split (codepeft.corpus.split_of)",
        "build_seconds": round(time.perf_counter() - started, 1),
        "python": sys.version.split()[0],
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


def read_info(path: Path) -> dict:
    return json.loads((path / INFO_FILE).read_text())
