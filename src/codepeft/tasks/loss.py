"""`<dataset>-loss`: held-out cross-entropy of responses, the cheap signal the Astraios study
found predictive of downstream scores."""

from __future__ import annotations

import torch

from codepeft.config import DatasetSpec
from codepeft.data import load_examples
from codepeft.data.formats import render
from codepeft.data.tokenize import IGNORE, Collator, encode
from codepeft.errors import CodepeftError
from codepeft.metrics import mean_ci
from codepeft.tasks.base import Task, TaskKind


class LossTask(Task):
    def __init__(self, dataset: str, split: str = "test"):
        super().__init__(
            name=f"{dataset}-loss",
            description=f"mean cross-entropy of the reference responses of {dataset} ({split} split)",
            metrics=("loss", "perplexity"),
            source=f"{dataset} [{split}]",
            kind=TaskKind.LOSS,
            stop=[],
        )
        self.dataset, self.split = dataset, split

    def problems(self):
        return [
            {"task_id": f"{self.dataset}/{i}", **ex}
            for i, ex in enumerate(load_examples(DatasetSpec(source=self.dataset, split=self.split), self.split))
        ]

    def run(self, problems, ctx):
        model = ctx.backend.model_in_memory()
        return self.evaluate_loss(model, ctx.tokenizer, problems, ctx.fmt, batch_size=ctx.settings.batch_size)

    def score(self, problems, completions, ks, pool=None):
        raise CodepeftError(f"{self.name} measures a model's loss; there are no completions to score")

    @torch.no_grad()
    def evaluate_loss(self, model, tokenizer, problems, fmt: str, max_length: int = 1024, batch_size: int = 8):
        """Token-weighted mean loss over response tokens, with a CI from resampling examples."""
        encdec = bool(getattr(model.config, "is_encoder_decoder", False))
        items = []
        for p in problems:
            prompt, response = render(fmt, p, tokenizer)
            item = encode(tokenizer, prompt, response, max_length, "response", encdec)
            if item is not None:
                items.append((p["task_id"], item))
        collate = Collator(tokenizer.pad_token_id, encdec)
        device = next(model.parameters()).device
        model.eval()
        per_example, total, tokens = [], 0.0, 0
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = collate([it for _, it in chunk])
            batch.pop("num_tokens")
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                **{k: v for k, v in batch.items() if k != "labels"}, **({"labels": batch["labels"]} if encdec else {})
            ).logits.float()
            # prompt-learning methods put their virtual tokens in front of the input: skip their logits
            extra = 0 if encdec else logits.shape[1] - batch["input_ids"].shape[1]
            labels = batch["labels"] if encdec else batch["labels"][:, 1:]
            logits = logits if encdec else logits[:, extra:-1]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
            ).view(labels.shape)
            mask = labels != IGNORE
            for (task_id, _), row, m in zip(chunk, nll, mask, strict=True):
                n = int(m.sum())
                per_example.append({"task_id": task_id, "loss": float(row[m].sum() / max(n, 1)), "tokens": n})
                total += float(row[m].sum())
                tokens += n
        mean = total / max(tokens, 1)
        _, ci = mean_ci([e["loss"] for e in per_example])
        scores = {
            "loss": {"value": mean, "ci95": ci, "tokens": tokens, "examples": len(per_example)},
            "perplexity": {"value": float(torch.exp(torch.tensor(mean)))},
        }
        return {"scores": scores, "problems": per_example}
