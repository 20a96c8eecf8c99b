"""Tokenization with prompt-token loss masking, truncation, packing, and batch collation."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

IGNORE = -100


def encode(tokenizer, prompt: str, response: str, max_length: int, loss_on: str, encoder_decoder: bool):
    """Token ids and labels for one example, or None when nothing is left to learn from."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
    if encoder_decoder:
        # The encoder reads the prompt; the decoder learns the response (loss_on has no meaning here).
        if prompt_ids[-1:] != eos:
            prompt_ids = prompt_ids[: max_length - len(eos)] + eos
        return {"input_ids": prompt_ids[-max_length:], "labels": response_ids[:max_length]}
    if prompt_ids and eos and prompt_ids[-1] == eos[0]:  # some tokenizers append EOS to every text
        prompt_ids = prompt_ids[:-1]
    ids = (prompt_ids + response_ids)[:max_length]
    n_prompt = min(len(prompt_ids), len(ids))
    labels = ([IGNORE] * n_prompt if loss_on == "response" else ids[:n_prompt]) + ids[n_prompt:]
    if all(label == IGNORE for label in labels[1:]):
        return None  # the prompt filled the whole window
    return {"input_ids": ids, "labels": labels}


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Greedy packing of encoded examples into rows of at most max_length tokens.

    Each row carries position_ids that restart at 0 for every example; with no attention mask
    transformers turns those into a block-diagonal causal mask, so attention never crosses
    examples. The first label of every example is masked so no token is predicted from the
    previous example's end.
    """
    rows, cur = [], {"input_ids": [], "labels": [], "position_ids": []}
    for ex in examples:
        n = len(ex["input_ids"])
        if cur["input_ids"] and len(cur["input_ids"]) + n > max_length:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": []}
        cur["input_ids"] += ex["input_ids"]
        cur["labels"] += [IGNORE] + ex["labels"][1:]
        cur["position_ids"] += list(range(n))
    if cur["input_ids"]:
        rows.append(cur)
    return rows


@dataclass
class Collator:
    """Right-pads a batch, or with `flatten` lays its examples end to end in one row (no
    padding at all); reports the number of real (non-padding) tokens as `num_tokens`."""

    pad_id: int
    encoder_decoder: bool = False
    flatten: bool = False
    boundaries: bool = False  # with flatten: pass where each example starts (`cu_seq_lens_q`)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        if self.flatten and "position_ids" not in features[0]:
            features = pack(features, sum(lengths))
            if self.boundaries:
                return {**self(features), **_cu_seq_lens(lengths)}
        packed = "position_ids" in features[0]
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": self._pad([f["input_ids"] for f in features], width, self.pad_id),
        }
        n_real = sum(len(f["input_ids"]) for f in features)
        if packed:
            # Padding becomes one more "example" at the end of the row (positions from 0).
            batch["position_ids"] = torch.tensor(
                [f["position_ids"] + list(range(width - len(f["position_ids"]))) for f in features]
            )
        else:
            batch["attention_mask"] = self._pad([[1] * len(f["input_ids"]) for f in features], width, 0)
        label_width = max(len(f["labels"]) for f in features) if self.encoder_decoder else width
        batch["labels"] = self._pad([f["labels"] for f in features], label_width, IGNORE)
        if self.encoder_decoder:
            n_real += sum(len(f["labels"]) for f in features)
        batch["num_tokens"] = torch.tensor(n_real)
        return batch

    @staticmethod
    def _pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _cu_seq_lens(lengths: list[int]) -> dict:
    """Example boundaries of a padding-free row, under the names transformers routes to attention."""
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    longest = max(lengths)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
