"""Full fine-tuning: every parameter is trained (the studies' FFT baseline)."""

from __future__ import annotations

from codepeft.methods.registry import Method, MethodFamily, register_method


def _apply(model, options, ctx):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


register_method(
    Method(
        name="full",
        family=MethodFamily.FULL,
        style="all weights",
        learning_rate=2e-5,
        defaults={},
        apply=_apply,
        option_names=set,
        mergeable=False,
        quantizable=False,
        notes="saved as full weights; no adapter",
    )
)
