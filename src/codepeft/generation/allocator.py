"""glibc's allocator settings for generating on a CPU.

By default glibc serves a large request (above a threshold that adapts up to 32 MB) with fresh
pages from the kernel, and gives memory at the heap's top back once more than twice that
threshold is free. A decode step allocates and frees several vocabulary-wide tensors (the
logits and what the logits processors make of them: 8 MB each for 40 rows of a 49k
vocabulary); served as fresh pages, each is faulted in again every step. Keeping them in the
heap raised SmolLM2-135M's sampling (n=20, 40 rows) from 169 to 189 tokens/s on two cores
(benchmarks/NOTES.md). No library sets this: transformers and torch leave the allocator to the
user (torch's CPU tuning guide suggests preloading jemalloc or tcmalloc instead).

Set once, in a process that generates with a model on the CPU: requests up to 64 MB come from
the heap and up to 256 MB of freed memory stays with the process. A user's own
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` take precedence; other C libraries (and
other systems) are left alone. Training keeps glibc's defaults: there peak memory is a result.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the settings above to this process (once); whether they are in effect."""
    if not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False  # the user chose
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):
        return False  # not glibc (musl's mallopt accepts and ignores these)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
