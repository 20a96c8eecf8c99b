"""`transformers.Trainer` with exact token counting, logits only where the loss needs them, and a
stop on non-finite loss."""

from __future__ import annotations

import inspect
import math
import statistics

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from codepeft.errors import NonFiniteLossError
from codepeft.models.loading import base_model

EVAL_LOSS_CHUNK = 256  # targets whose logits an evaluation step holds at once (at most)


class CodepeftTrainer(Trainer):
    """Counts real (non-padding) training tokens from the collator's `num_tokens`, and raises
    NonFiniteLossError before a NaN/inf loss or gradient, or an exploding gradient, reaches the
    optimizer."""

    tokens_seen = 0
    targets_seen = 0  # tokens that carry a loss
    _norms: list[float]

    def __init__(
        self,
        *args,
        explode_factor: float | None = 1000.0,
        logits_on_targets: bool = False,
        loss_chunk: int = 0,
        **kwargs,
    ):
        """`explode_factor`: stop when the gradient norm exceeds this many times the recent median
        (None: only NaN / inf stop); `logits_on_targets`: compute logits only where the loss reads
        them (padding-free batches of models that take `logits_to_keep`); `loss_chunk`: compute
        the loss of decoder-only models over this many targets at a time, with no logits kept
        for the backward pass (0: the model's own loss, every target's logits at once)."""
        self.explode_factor = explode_factor
        self.logits_on_targets = logits_on_targets
        self.loss_chunk = loss_chunk
        self._chunking_checked = False
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n = inputs.pop("num_tokens", None)
        if n is not None and model.training:
            self.tokens_seen += int(n)
            self.targets_seen += count_targets(inputs, model)
        if self.loss_chunk and "labels" in inputs and not return_outputs and self._can_chunk(model, inputs):
            # a model that takes no loss kwargs returns a mean, which the Trainer divides by the
            # accumulation steps itself: then so does this
            count = num_items_in_batch if self.model_accepts_loss_kwargs else None
            return chunked_causal_loss(model, inputs, self.loss_chunk, count)
        if self.logits_on_targets and "labels" in inputs:
            inputs = logits_at_targets(inputs)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _can_chunk(self, model, inputs) -> bool:
        """Checked once, on the first batch: whether the model's logits are its output layer applied
        to its last hidden state (no soft-capping or scaling the chunked loss would miss)."""
        if not self._chunking_checked:
            self._chunking_checked = True
            self.loss_chunk = self.loss_chunk if logits_are_head_of_hidden(model, inputs) else 0
        return bool(self.loss_chunk)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("num_tokens", None)
        if prediction_loss_only and self.loss_chunk and "labels" in inputs and self._can_chunk(model, inputs):
            # held-out loss: no gradient, so chunks cost no recomputation, only smaller logits
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = chunked_causal_loss(model, inputs, min(self.loss_chunk, EVAL_LOSS_CHUNK))
            return loss.detach(), None, None
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


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (the next token's), -100 at the last position."""
    return torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]


def logits_at_targets(inputs: dict) -> dict:
    """Ask a one-row (padding-free) batch's model for logits only at the positions that predict
    a label, with those labels already shifted: the same loss, without the vocabulary-wide
    product, log-softmax and gradient at prompt and boundary tokens (with response-only loss,
    most of a row). The model passes `shift_labels` on to transformers' causal-LM loss."""
    shifted = shift_labels(inputs["labels"])
    keep = (shifted[0] != -100).nonzero().squeeze(1)
    return {**inputs, "logits_to_keep": keep, "shift_labels": shifted[:, keep]}


def _last_hidden(model, inputs: dict) -> torch.Tensor:
    """The last hidden state at the input positions (virtual tokens of prompt methods, which
    come first, left out); logits are computed for one position only."""
    kwargs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    out = model(**kwargs, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1][:, -inputs["input_ids"].shape[1] :]


@torch.no_grad()
def logits_are_head_of_hidden(model, inputs: dict) -> bool:
    """Whether the model's logits equal its output layer applied to the last hidden state, on
    the first 16 tokens of the batch's first row (so the chunked loss computes the same loss)."""
    base = base_model(model)
    head = base.get_output_embeddings()
    if head is None or getattr(base.config, "is_encoder_decoder", False):
        return False
    was_training = model.training
    model.eval()  # no dropout: the two passes must see the same network
    try:
        small = {k: v[:1, :16] for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        logits = model(**small).logits[:, -small["input_ids"].shape[1] :]
        mine = head(_as_head_input(head, _last_hidden(model, small)))
        return logits.shape == mine.shape and torch.allclose(logits.float(), mine.float(), atol=1e-4, rtol=1e-4)
    except (TypeError, ValueError, AttributeError, IndexError, RuntimeError):  # no logits_to_keep, or a dtype
        return False
    finally:
        model.train(was_training)


def _as_head_input(head, hidden: torch.Tensor) -> torch.Tensor:
    """The hidden state in the output layer's dtype (a bf16 base under fp32 training keeps it so)."""
    weight = getattr(head, "weight", None)
    return hidden.to(weight.dtype) if isinstance(weight, torch.Tensor) and weight.is_floating_point() else hidden


def chunked_causal_loss(model, inputs: dict, chunk: int, num_items_in_batch=None) -> torch.Tensor:
    """Causal-LM cross-entropy computed `chunk` targets at a time: the output layer runs on the
    hidden states of the target positions only, and no chunk's logits outlive it, so peak
    memory no longer grows with vocabulary x tokens. Equal to the model's own loss (mean over
    targets, or sum / `num_items_in_batch` as transformers computes it under gradient
    accumulation)."""
    shifted = shift_labels(inputs["labels"])
    hidden = _last_hidden(model, inputs)
    where = shifted != -100
    states, targets = hidden[where], shifted[where]
    head = base_model(model).get_output_embeddings()
    states = _as_head_input(head, states)
    if _plain_product(head):
        total = linear_cross_entropy(states, head.weight, targets, chunk)
    else:  # a head that is not one local product: call it on each chunk, recomputed in backward

        def piece(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(head(h).float(), t, reduction="sum")

        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, len(targets), chunk):
            h, t = states[start : start + chunk], targets[start : start + chunk]
            if torch.is_grad_enabled():
                total = total + torch.utils.checkpoint.checkpoint(piece, h, t, use_reentrant=False)
            else:
                total = total + piece(h, t)
    count = num_items_in_batch if num_items_in_batch is not None else max(len(targets), 1)
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count


def _plain_product(head) -> bool:
    """Whether the output layer is `x @ weight.T` with its whole weight here (not adapted, not
    biased, not a shard that its forward hooks would gather, as DeepSpeed ZeRO-3 and FSDP keep)."""
    weight = getattr(head, "weight", None)
    return (
        type(head) is torch.nn.Linear
        and head.bias is None
        and type(weight) is torch.nn.Parameter
        and tuple(weight.shape) == (head.out_features, head.in_features)
        and not head._forward_pre_hooks
    )


def linear_cross_entropy(states: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
    """Summed cross-entropy of `states @ weight.T` against `targets`, `chunk` rows at a time.
    With gradients on, each chunk's gradients are computed as soon as its logits exist (the
    softmax minus the one-hot targets, times the weight), so the backward pass recomputes
    nothing and only one chunk's logits are ever held: Liger's fused linear cross-entropy,
    written with torch operations for the CPU (Liger's kernels are Triton, CUDA only)."""
    grads = torch.is_grad_enabled() and (states.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(states, weight, targets, chunk, grads)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, weight, targets, chunk: int, grads: bool):
        total = torch.zeros((), dtype=torch.float32, device=states.device)
        grad_states = torch.empty_like(states) if grads and states.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grads and weight.requires_grad else None
        for start in range(0, len(targets), chunk):
            h, t = states[start : start + chunk], targets[start : start + chunk]
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_states is None and grad_weight is None:
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
            probs[torch.arange(len(t), device=t.device), t] -= 1.0  # d(loss)/d(logits)
            probs = probs.to(weight.dtype)
            if grad_states is not None:
                torch.mm(probs, weight, out=grad_states[start : start + chunk])
            if grad_weight is not None:
                grad_weight.addmm_(probs.t().float(), h.float())
        ctx.save_for_backward(grad_states, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad):
        grad_states, grad_weight = ctx.saved_tensors
        return (
            grad_states * grad.to(grad_states.dtype) if grad_states is not None else None,
            (grad_weight * grad).to(ctx.weight_dtype) if grad_weight is not None else None,
            None,
            None,
            None,
        )


def count_targets(inputs: dict, model) -> int:
    if "shift_labels" in inputs:
        return int(inputs["shift_labels"].numel())
    labels = inputs.get("labels")
    if labels is None:
        return 0
    seq2seq = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    return int((labels if seq2seq else labels[:, 1:]).ne(-100).sum())


def supports_logits_at_targets(model) -> bool:
    """Decoder-only models whose forward slices logits by `logits_to_keep` and whose loss is
    transformers' causal-LM loss (which reads `shift_labels`)."""
    base = base_model(model)
    if getattr(base.config, "is_encoder_decoder", False):
        return False
    params = inspect.signature(base.forward).parameters
    return "logits_to_keep" in params and getattr(base, "loss_type", None) in (None, "ForCausalLM")
