"""Tuning methods: one registry (`get_method`, `all_methods`) and the operations on tuned models."""

from codepeft.methods.apply import apply_method, count_parameters, effective_quantization, merge_model
from codepeft.methods.registry import (
    ZERO_SHOT,
    ApplyContext,
    Method,
    MethodFamily,
    all_methods,
    get_method,
    register_method,
)

__all__ = [
    "ZERO_SHOT",
    "ApplyContext",
    "Method",
    "MethodFamily",
    "all_methods",
    "apply_method",
    "count_parameters",
    "effective_quantization",
    "get_method",
    "merge_model",
    "register_method",
]
