"""`transformers.Trainer` with exact token counting and a stop on non-finite loss."""

from __future__ import annotations

import math
import statistics

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from codepeft.errors import NonFiniteLossError


class CodepeftTrainer(Trainer):
    """Counts real (non-padding) training tokens from the collator's `num_tokens`, and raises
    NonFiniteLossError before a NaN/inf loss or gradient, or an exploding gradient, reaches the
    optimizer."""

    tokens_seen = 0
    explode_factor: float | None = 1000.0
    _norms: list[float]

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
            self._diverged(float(loss))
        if self.accelerator.sync_gradients:  # the last micro-batch: gradients are whole
            self._check_gradients(model, float(loss))
        return loss

    def _check_gradients(self, model, loss: float) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        if not math.isfinite(norm):
            self._diverged(loss, f"the gradient norm became {norm}")
        norms = self.__dict__.setdefault("_norms", [])
        if self.explode_factor and len(norms) >= 10:
            typical = statistics.median(norms)
            if norm > self.explode_factor * typical:
                self._diverged(loss, f"gradients exploded (norm {norm:.3g}, {norm / typical:.0f}x the recent median)")
        norms[:] = [*norms[-49:], norm]

    def _diverged(self, loss: float, what: str | None = None) -> None:
        last = get_last_checkpoint(self.args.output_dir) if self.args.output_dir else None
        raise NonFiniteLossError(self.state.global_step + 1, loss, last, what)
