"""One study cell in a process of its own, started by the local backend (`codepeft.study.runner`).

The process is started as `python -c BOOT STUDY_PID RESULT_PATH THREADS` with the cell's spec as
JSON on stdin (or {"together": [specs], "log": path}: a group evaluated together). BOOT
asks the kernel for SIGKILL when the study process dies before anything slow
is imported (importing torch takes seconds, and a study killed in those seconds must not leave a
worker behind), then calls `main`, which runs the cell and writes its result (always a JSON
object; `{"error": ...}` for a failed cell) to RESULT_PATH atomically.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BOOT = """\
import os, signal, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(3)  # the study died before the request above
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the study's to handle: it stops this worker
from codepeft.study.worker import main
main(sys.argv[2:])
"""


def command(study_pid: int, result_path: Path, threads: int) -> list[str]:
    return [sys.executable, "-c", BOOT, str(study_pid), str(result_path), str(threads)]


def main(argv: list[str]) -> None:
    result_path, threads = Path(argv[0]), int(argv[1])
    spec = json.loads(sys.stdin.read())
    import torch

    torch.set_num_threads(threads)
    from codepeft.study.cells import run_cell, run_cells_together

    together = "together" in spec  # a group of trained cells evaluated at once (codepeft.study.together)
    result = run_cells_together(spec["together"], spec.get("log")) if together else run_cell(spec, log=True)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)


def read_result(result_path: Path, returncode: int | None) -> dict:
    """What a finished worker left: its result, or why there is none."""
    try:
        return json.loads(result_path.read_text())
    except (OSError, ValueError):
        how = f"killed by signal {-returncode}" if returncode and returncode < 0 else f"exit code {returncode}"
        return {"error": f"worker process failed ({how}) before it wrote a result"}
    finally:
        result_path.unlink(missing_ok=True)
