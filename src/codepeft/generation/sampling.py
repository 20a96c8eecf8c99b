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


def nucleus(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens nucleus sampling keeps, as (index, keep): `index` ranks each row's top k tokens
    by falling probability and `keep` marks those whose predecessors hold less than `top_p` of the
    mass (at least one), as transformers' `TopPLogitsWarper` keeps them. It sorts the whole
    vocabulary each step (75 ms a step for 40 rows of a 49k vocabulary on two cores); the kept
    tokens are few, so the top k are ranked instead, k growing fourfold until every row's nucleus
    ends inside them. (Log-probabilities: torch's `log_softmax` is several times faster on a CPU
    than `logsumexp`, whose `exp` slows down where most tokens' probabilities underflow.)"""
    logprobs = scores.float().log_softmax(dim=-1)
    vocab = logprobs.shape[-1]
    k = min(64, vocab)
    while True:
        top, index = logprobs.topk(k, dim=-1)
        probs = top.exp()
        if k == vocab or bool((probs.sum(dim=-1) >= top_p).all()):
            break
        k = min(4 * k, vocab)
    keep = (probs.cumsum(dim=-1) - probs) < top_p
    keep[:, 0] = True
    return index, keep


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
        if len(self.seeds) != scores.shape[0]:
            raise RuntimeError(f"{len(self.seeds)} sampling seeds for a batch of {scores.shape[0]} rows")
        if self.top_p < 1.0:
            index, keep = nucleus(scores, self.top_p)
            # kept tokens in token order (the rest pushed to the end): the noise follows token order
            ordered = index.masked_fill(~keep, scores.shape[-1]).sort(dim=-1).values
            counts = keep.sum(dim=-1).tolist()
            kept = [ordered[row, :count] for row, count in enumerate(counts)]
        else:  # every token the earlier processors left finite
            kept = [finite.nonzero().squeeze(1) for finite in torch.isfinite(scores)]
        # Noise only for the kept tokens (a handful at low temperature with top-p), in token order:
        # which tokens are kept depends on the row's own logits only.
        generator = torch.Generator(device="cpu")
        noisy = []
        for row, (seed, index) in enumerate(zip(self.seeds, kept, strict=True)):
            generator.manual_seed((seed + step * 0x9E3779B97F4A7C15) % (1 << 63))
            uniform = torch.rand(index.numel(), generator=generator).clamp_(min=1e-20, max=1.0 - 1e-7)
            noisy.append(scores[row, index] - torch.log(-torch.log(uniform)).to(scores.device))
        out = scores.fill_(float("-inf"))  # the tempered copy is this processor's own
        for row, (index, values) in enumerate(zip(kept, noisy, strict=True)):
            out[row, index] = values
        return out
