"""Shared by the benchmarks: the machine and library versions every result is recorded with,
and running one measurement in a fresh process (so none inherits another's memory or warm
caches)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for name in ("peft", "trl", "bitsandbytes"):
        with contextlib.suppress(ImportError, AttributeError):
            versions[name] = __import__(name).__version__
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }


def in_fresh_process(script: Path, *args: str, timeout: float = 3600) -> dict:
    """Run `script --worker ARGS` in a new interpreter; it prints one JSON object last."""
    out = subprocess.run(
        [sys.executable, str(script), "--worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class PeakRss:
    """This process's peak resident set above its value at `start()`, sampled every 5 ms by a
    thread (the measurement inside a worker; PEAK_SAMPLER below is the same for `python -c`)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.start_rss = self.peak = 0
        self.running = False

    def start(self) -> PeakRss:
        import threading

        self.start_rss = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def stop(self) -> int:
        """Stop sampling; the peak above the start, in bytes."""
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.above_start

    @property
    def above_start(self) -> int:
        return self.peak - self.start_rss

    def __enter__(self) -> PeakRss:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Prologue of a peak-memory measurement run with `python -c`: samples RSS every 5 ms into
# peak[0]; `start_sampling()` records the RSS before the measured work and starts the sampler.
PEAK_SAMPLER = r"""
import json, sys, threading, time, psutil, torch
torch.set_num_threads(2)
proc = psutil.Process()
peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.005)
def start_sampling():
    threading.Thread(target=sample, daemon=True).start()
    return proc.memory_info().rss
"""


def run_worker(argv: list[str], workers: dict) -> None:
    """`--worker KIND ARGS...`: call workers[KIND](*ARGS) (digits as ints), print its JSON."""
    kind, *rest = argv
    print(json.dumps(workers[kind](*[int(r) if r.isdigit() else r for r in rest])))


def finish(result: dict, out: Path | None) -> None:
    """Print the result, and write it to --out when given."""
    text = json.dumps(result, indent=1)
    if out:
        out.write_text(text)
    print(text)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
