"""Processes of a study live and die with it, and a directory has one writer at a time.

- A local worker process (`codepeft.study.worker`) is killed by the kernel the moment the study
  process that started it dies, whatever killed it (SIGKILL, the OOM killer, a closed terminal):
  `PR_SET_PDEATHSIG`, requested first thing in the worker. Its sandboxes die with it
  (bubblewrap's `--die-with-parent`, and the same signal for programs at the rlimits level, set
  by `codepeft.execution.confine`).
- `watch_owner`: the same for a Ray task on the study's machine, whose parent is Ray's worker
  pool, not the study: a thread polls the study's pid and start time (so a reused pid is not
  mistaken for it), then stops the task's descendants and ends it.
- `DirLock`: an exclusive `flock` on a file in a directory, holding the holder's pid and start
  time. The kernel drops it when the holder dies, so a stale lock of a killed process is never in
  the way, and a live holder is named in the message.
- `stop_descendants`: what SIGTERM / SIGINT of a study does to its workers before it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

import psutil

POLL_S = 0.2


def owner() -> dict:
    """Who the current process is, for a worker to watch or a lock to name."""
    me = psutil.Process()
    return {"pid": me.pid, "started": me.create_time(), "host": socket.gethostname()}


def alive(who: dict) -> bool:
    try:
        proc = psutil.Process(who["pid"])
        return proc.create_time() == who["started"] and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_descendants(grace_s: float = 3.0) -> None:
    """Terminate every process below this one, then kill what is left after `grace_s`."""
    procs = psutil.Process().children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, left = psutil.wait_procs(procs, timeout=grace_s)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=grace_s)


def watch_owner(who: dict | None) -> None:
    """End this process and its descendants when `who` (see `owner()`) is gone. No-op for an
    owner on another machine (a Ray cluster ends a dead driver's tasks itself)."""
    if not who or who.get("host") != socket.gethostname():
        return

    def watch() -> None:
        while alive(who):
            time.sleep(POLL_S)
        stop_descendants(grace_s=1.0)
        os._exit(3)

    threading.Thread(target=watch, name="codepeft-owner-watch", daemon=True).start()


class Busy(Exception):
    """The directory is locked by a live process; the message names it."""


class DirLock:
    """`with DirLock(directory, "study", wait_s=0)`: exclusive while the block runs."""

    def __init__(self, directory: str | Path, what: str, wait_s: float = 0.0):
        self.path = Path(directory) / f".codepeft-{what}.lock"
        self.what = what
        self.wait_s = wait_s
        self.fd: int | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def __enter__(self) -> DirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    who = self.holder() or {}
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who.get("started", 0)))
                    raise Busy(
                        f"{self.path.parent} is in use by another codepeft process "
                        f"(pid {who.get('pid', '?')} on {who.get('host', '?')}, started {since})"
                    ) from None
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
