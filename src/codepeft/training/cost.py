"""Peak memory and wall time of a training run: CUDA max allocated on GPU, peak RSS on CPU."""

from __future__ import annotations

import threading
import time

import psutil
import torch


class PeakMemory:
    """Samples this process's RSS in a thread (CPU), or reads CUDA's allocator peak (GPU)."""

    def __init__(self, cuda: bool, interval: float = 0.05):
        self.cuda = cuda
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        self.started = time.perf_counter()
        self.at_start = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.at_start = torch.cuda.memory_allocated()
        else:
            proc = psutil.Process()
            self.peak = self.at_start = proc.memory_info().rss

            def sample():
                while not self._stop.wait(self.interval):
                    self.peak = max(self.peak, proc.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_time = time.perf_counter() - self.started
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            if self._thread:
                self._thread.join()
            self.peak = max(self.peak, psutil.Process().memory_info().rss)

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.cuda else "cpu_peak_rss"
