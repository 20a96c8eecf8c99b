"""A long-lived bubblewrap sandbox that forks one fresh process per Python program.

Starting bubblewrap and a Python interpreter costs more than most HumanEval programs take to
run. A zygote is started once inside the same sandbox as `run_sandboxed` uses (own user, pid,
network, ipc and mount namespaces; read-only system; a size-capped tmpfs) and then, for each
program: forks a child that sets the program's resource limits (it cannot raise them again),
gets an empty working directory, its own process group, the end marker on a pipe (in no file
it can read) and runs the program exactly as the one-shot harness does; when the child ends
or its wall-clock limit passes, the zygote kills every other process in the sandbox, wipes the
working directory and /tmp, and reports the raw outcome on its own pipe (closed in the child,
so a program cannot write a verdict). The zygote is not dumpable, so a program cannot ptrace it
or read its memory; a program that kills it only ends its own run (an error, and a new zygote).

Between two programs of one zygote nothing survives: no process, no file, no Python state
(each child is forked from the same clean zygote). The zygote imports the standard modules
programs commonly use and prints one traceback before its first fork, so children do not pay
for either (~10 ms a program; `zygote_program.PRELOAD`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import queue
import select
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from codepeft.execution import zygote_program
from codepeft.execution.limits import Limits
from codepeft.execution.sandbox import (
    RawRun,
    bwrap_argv,
    hide_from_programs,
    is_root,
    kill_all_of,
    module_source,
    run_uid,
    sandbox_python,
    setpriv_argv,
)


class ZygoteDied(RuntimeError):
    """The zygote ended while running a program (the program killed it, or it was killed)."""


class Zygote:
    """One sandboxed zygote process (bubblewrap level only) and the pipe to it."""

    def __init__(self, boot: str, disk_mb: int):
        hide_from_programs()
        self.own_uid = is_root() and shutil.which("setpriv") is not None
        self.uid = run_uid()
        self.disk_mb = disk_mb
        self.workdir = Path(tempfile.mkdtemp(prefix="codepeft-zygote-"))
        argv = setpriv_argv(self.uid) if self.own_uid else []
        argv += bwrap_argv(self.workdir, _ro_binds(), disk_mb, writable_workdir=False)
        argv += [sandbox_python(), "-I", "-B", "-c", module_source(zygote_program), boot]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )

    def run(self, source: str, marker: str, limits: Limits) -> RawRun:
        job = {
            "source": source,
            "marker": marker,
            "limits": {
                "cpu": int(limits.cpu_seconds + 0.999),
                "wall": limits.wall_seconds,
                "as_mb": limits.memory_mb,
                "fsize_mb": limits.file_size_mb,
                # the zygote and bwrap's init count against the user's process limit too
                "nproc": limits.processes + 2,
                "output_bytes": limits.output_bytes,
            },
        }
        reply = None
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            reply = _readline(self.proc.stdout.fileno(), limits.wall_seconds + 30)
        except (BrokenPipeError, OSError):
            pass
        if not reply:
            self.close()
            raise ZygoteDied("the sandbox's zygote ended while running the program")
        return RawRun(**json.loads(reply))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def own_processes(self) -> set[int]:
        """bubblewrap, its init in the sandbox and the zygote: the processes that stay between
        programs (anything else of this sandbox is a leftover)."""
        pids = {self.proc.pid}
        with contextlib.suppress(psutil.Error):
            for init in psutil.Process(self.proc.pid).children():
                pids.add(init.pid)
                pids.update(p.pid for p in init.children())
        return pids

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.own_uid:
            kill_all_of(self.uid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _readline(fd: int, timeout: float) -> bytes | None:
    """The zygote's one-line reply, or None when it ends or does not answer within `timeout`
    seconds (it writes nothing else, so nothing after the line is lost)."""
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        part = os.read(fd, 1 << 16)
        if not part:
            return None
        parts.append(part)
        if part.endswith(b"\n"):
            return b"".join(parts)


def _ro_binds() -> list[str]:
    py = Path(sandbox_python())
    return [str(py.parent.parent)] if not str(py).startswith("/usr/") else []


class ZygotePool:
    """Idle zygotes ready for the next program; one is taken per program and given back."""

    def __init__(self, boot: str, keep: int = 8):
        self.boot = boot
        self.idle: queue.SimpleQueue[Zygote] = queue.SimpleQueue()
        self.keep = keep
        self.lock = threading.Lock()
        self.count = 0
        # Zygotes are started from one thread that lives as long as the pool: bubblewrap's
        # --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that started it ends, so a
        # zygote started from a SandboxPool worker thread died when that pool's threads finished.
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codepeft-zygotes")

    def run(self, source: str, marker: str, limits: Limits) -> RawRun:
        """Run one program in an idle zygote (a new one if none is idle); raises `ZygoteDied`
        when the zygote ends during the run (it is not given back)."""
        zygote = self._take(limits.disk_mb)
        result = zygote.run(source, marker, limits)
        self._give_back(zygote)
        return result

    def _take(self, disk_mb: int) -> Zygote:
        while True:
            try:
                zygote = self.idle.get_nowait()
            except queue.Empty:
                return self.spawner.submit(Zygote, self.boot, disk_mb).result()
            if zygote.alive() and zygote.disk_mb == disk_mb:
                with self.lock:
                    self.count -= 1
                return zygote
            with self.lock:
                self.count -= 1
            zygote.close()

    def _give_back(self, zygote: Zygote) -> None:
        with self.lock:
            if self.count < self.keep:
                self.count += 1
                self.idle.put(zygote)
                return
        zygote.close()

    def close(self) -> None:
        while True:
            try:
                self.idle.get_nowait().close()
            except queue.Empty:
                break
        self.spawner.shutdown(wait=False)

    def idle_processes(self) -> set[int]:
        """The processes of the idle zygotes (see `Zygote.own_processes`)."""
        zygotes = []
        while True:
            try:
                zygotes.append(self.idle.get_nowait())
            except queue.Empty:
                break
        for z in zygotes:
            self.idle.put(z)
        return set().union(*(z.own_processes() for z in zygotes))


@functools.cache
def shared_zygotes() -> ZygotePool:
    """The process's pool of idle zygotes, made on first use and closed at exit. One per
    process by design: every evaluation and `SandboxPool` of the process reuses the same warm
    sandboxes (`execute` takes its programs here at the bubblewrap level)."""
    from codepeft.execution.languages import PYTHON_BOOT

    pool = ZygotePool(PYTHON_BOOT)
    atexit.register(pool.close)
    return pool
