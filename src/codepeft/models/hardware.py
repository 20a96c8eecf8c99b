"""What the machine offers that changes a run's speed or numbers: CPU features and fast bf16.

Machines of the same kind differ: on a CPU with AVX512_BF16 (or AMX) a bf16 matmul runs about 4x
faster than fp32, on one with AVX2 only about 25x slower. `model.dtype: auto` is decided here, from
the CPU's own flags, never from an assumption about the machine.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

# The flags that decide a path somewhere in the stack (ATen's kernels, oneDNN, bitsandbytes).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# "1" / "0" force the CPU bf16 decision (e.g. to reproduce an fp32 result on a bf16-capable CPU).
FORCE_ENV = "CODEPEFT_CPU_BF16"


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (empty where it is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (x86 `flags`, Arm `Features`)."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_features() -> dict:
    """What run.json and `codepeft doctor` record about the CPU."""
    flags = cpu_flags()
    return {
        "model": _cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "flags": [f for f in RELEVANT_FLAGS if f in flags],
        "torch_kernels": torch.backends.cpu.get_cpu_capability(),
        "fast_bf16": fast_cpu_bf16(),
    }


def fast_cpu_bf16() -> bool:
    forced = os.environ.get(FORCE_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return any(f in cpu_flags() for f in FAST_BF16_FLAGS)


def resolve_dtype(requested: str, device: str) -> tuple[str, str]:
    """(dtype, reason): the configured dtype, or for `auto` the fastest one this device runs well."""
    if requested != "auto":
        return requested, "set in the config"
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "fp32", "auto: the GPU has no bf16 support"
    chosen = "bf16" if fast_cpu_bf16() else "fp32"
    if os.environ.get(FORCE_ENV) in ("0", "1"):
        return chosen, f"auto: {FORCE_ENV}={os.environ[FORCE_ENV]} forces {chosen} on this CPU"
    if chosen == "bf16":
        found = ", ".join(f for f in FAST_BF16_FLAGS if f in cpu_flags())
        return "bf16", f"auto: the CPU has {found} (bf16 matmuls several times faster than fp32)"
    return "fp32", "auto: the CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be many times slower)"
