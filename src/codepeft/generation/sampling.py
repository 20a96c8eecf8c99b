"""Sampling whose every row has its own random stream, so a sample does not depend on the batch.

transformers' sampler draws one `torch.multinomial` over the whole batch: which completion a
row gets depends on which other rows share its batch, how many there are, and in what order.
codepeft batches the same prompts differently on purpose (finished rows are dropped, several
adapters share one batch, `batch_size` is a speed setting), so it samples with the Gumbel-max
trick instead: row r at step t adds Gumbel noise drawn from a generator seeded by (the row's
seed, t) to its tempered, top-p-filtered logits (the tokens top-p keeps, in token order) and
takes the arg-max, a draw from exactly the distribution transformers samples from. A row's
seed comes from the evaluation's seed, the prompt text and the sample's index, so the same
prompt gets the same samples in any batch.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, TemperatureLogitsWarper


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """The random stream of one sample of one prompt (stable across processes and versions)."""
    digest = hashlib.sha256(f"{seed}\0{sample}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def top_p_kept(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which tokens nucleus sampling keeps: by falling probability, every token whose
    predecessors hold less than `top_p` of the mass (at least one), as transformers'
    `TopPLogitsWarper` keeps them. It sorts the whole vocabulary each step (75 ms a step for 40
    rows of a 49k vocabulary on two cores); the kept tokens are few, so the top k are ranked
    instead, k growing fourfold until every row's nucleus ends inside them."""
    probs = scores.float().softmax(dim=-1)
    vocab = probs.shape[-1]
    k = min(64, vocab)
    while True:
        top, index = probs.topk(k, dim=-1)
        if k == vocab or bool((top.sum(dim=-1) >= top_p).all()):
            break
        k = min(4 * k, vocab)
    keep = (top.cumsum(dim=-1) - top) < top_p
    keep[:, 0] = True
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(1, index, keep)


class SeededSampling(LogitsProcessor):
    """Turns greedy decoding into sampling at `temperature` / `top_p`, row by row (see above).
    `seeds` follows the rows of the batch; whoever drops rows between calls updates it."""

    def __init__(self, temperature: float, top_p: float, seeds: list[int]):
        self.temperature = TemperatureLogitsWarper(temperature)
        self.top_p = top_p
        self.seeds = list(seeds)
        self.start: int | None = None  # the prompt's width: steps count from there

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        scores = self.temperature(input_ids, scores.float())
        if self.top_p < 1.0:
            scores = scores.masked_fill(~top_p_kept(scores, self.top_p), float("-inf"))
        if len(self.seeds) != scores.shape[0]:
            raise RuntimeError(f"{len(self.seeds)} sampling seeds for a batch of {scores.shape[0]} rows")
        # Noise only for the tokens top-p kept (a handful at low temperature), in token order:
        # which tokens are kept depends on the row's own logits only.
        kept = torch.isfinite(scores)
        out = torch.full_like(scores, float("-inf"))
        generator = torch.Generator(device="cpu")
        for row, seed in enumerate(self.seeds):
            index = kept[row].nonzero().squeeze(1)
            generator.manual_seed((seed + step * 0x9E3779B97F4A7C15) % (1 << 63))
            uniform = torch.rand(index.numel(), generator=generator).clamp_(min=1e-20, max=1.0 - 1e-7)
            out[row, index] = scores[row, index] - torch.log(-torch.log(uniform)).to(scores.device)
        return out
