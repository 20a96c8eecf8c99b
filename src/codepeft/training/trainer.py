"""`transformers.Trainer` with exact token counting and a stop on non-finite loss."""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from codepeft.errors import NonFiniteLossError


class CodepeftTrainer(Trainer):
    """Counts real (non-padding) training tokens from the collator's `num_tokens` and raises
    NonFiniteLossError before a NaN/inf gradient reaches the optimizer."""

    tokens_seen = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n = inputs.pop("num_tokens", None)
        if n is not None and model.training:
            self.tokens_seen += int(n)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("num_tokens", None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            last = get_last_checkpoint(self.args.output_dir) if self.args.output_dir else None
            raise NonFiniteLossError(self.state.global_step + 1, float(loss), last)
        return loss
