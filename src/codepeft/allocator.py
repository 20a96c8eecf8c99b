"""glibc's allocator settings for CPU work that allocates and frees the same large tensors over
and over: generation's decode steps and training steps.

By default glibc serves a large request (above a threshold that adapts up to 32 MB) with fresh
pages from the kernel, and gives memory at the heap's top back once more than twice that
threshold is free. Either way the memory is faulted in again when it is next used, at a cost of
about a microsecond per 4 KB page on a virtual machine.

- A decode step allocates and frees several vocabulary-wide tensors (the logits and what the
  logits processors make of them: 8 MB each for 40 rows of a 49k vocabulary). Keeping them in
  the heap raised SmolLM2-135M's sampling (n=20, 40 rows) from 169 to 189 tokens/s on two cores.
- A training step frees its activations in the backward pass and allocates them again in the
  next forward pass; glibc gives much of that back in between (a LoRA step on SmolLM2-135M
  refaulted about 350 MB a step: 1.45 against 0.82 million page faults over seven steps). Kept,
  the step ran about 3% faster and the peak resident set grew little (within 3% in six-step
  runs, 3-5% in the TRL comparison's twelve), since memory kept between steps is mostly the
  memory the next step uses (benchmarks/NOTES.md).

No library sets this: transformers and torch leave the allocator to the user (torch's CPU tuning
guide suggests preloading jemalloc or tcmalloc instead). `retain_freed_memory` applies a
setting once a process does such work on a CPU, and only ever raises it. A user's own
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` take precedence; other C libraries (and
other systems) are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import NamedTuple


class Retention(NamedTuple):
    mmap_threshold: int  # requests up to this size come from the heap
    trim_threshold: int  # up to this much freed memory stays with the process (NEVER: all of it)


NEVER = sys.maxsize
GENERATION = Retention(64 << 20, 256 << 20)
# the loss chunk's logits (1,024 rows of a 152k vocabulary: 620 MB) from the heap, and a whole
# step's freed activations kept for the next step: training's peak is what it holds anyway
TRAINING = Retention(1 << 30, NEVER)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_applied = Retention(0, 0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return None  # the user chose
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # musl accepts and ignores these


def retain_freed_memory(setting: Retention = GENERATION) -> bool:
    """Apply `setting` to this process, unless a larger one is in effect; whether glibc keeps
    freed memory at least this much now."""
    global _applied
    libc = _libc()
    if libc is None:
        return False
    wanted = Retention(*(max(a, b) for a, b in zip(_applied, setting, strict=True)))
    if wanted != _applied:
        # both at once: setting either freezes the other at its current (adaptive) value
        trim = -1 if wanted.trim_threshold >= 1 << 31 else wanted.trim_threshold  # mallopt: -1 never trims
        if not (libc.mallopt(_M_MMAP_THRESHOLD, wanted.mmap_threshold) and libc.mallopt(_M_TRIM_THRESHOLD, trim)):
            return False
        _applied = wanted
    return True
