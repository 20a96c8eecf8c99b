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
(each child is forked from the same clean zygote).
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import psutil

from codepeft.execution.limits import Limits
from codepeft.execution.sandbox import (
    RawRun,
    _bwrap_argv,
    _is_root,
    _kill_all_of,
    _setpriv,
    hide_from_programs,
    run_uid,
    sandbox_python,
)

ZYGOTE = r'''
import atexit, ctypes, json, os, resource, select, signal, sys, time, traceback, threading

ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/mem
me = os.getpid()
channel_in, channel_out = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0)
os.dup2(devnull, 1)
ROOT = None

def live(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

def sweep():
    """Kill every process of the sandbox but bwrap's init and this zygote, until none is left."""
    keep = {1, me}
    for _ in range(400):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and live(p)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.005)

def wipe(path):
    for root, dirs, files in os.walk(path):  # first make every directory enterable
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files + dirs:
            full = os.path.join(root, name)
            try:
                os.chmod(full, 0o700) if os.path.isdir(full) and not os.path.islink(full) else None
                (os.rmdir if os.path.isdir(full) and not os.path.islink(full) else os.unlink)(full)
            except OSError:
                pass

def head(path, limit):
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        return ""
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[... truncated]" if len(data) > limit else "")

def child(job, marker_fd):
    os.setsid()
    os.chdir(ROOT)
    lim = job["limits"]
    mb = 2 ** 20
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize_mb"] * mb, lim["fsize_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    if lim["as_mb"] is not None:
        resource.setrlimit(resource.RLIMIT_AS, (lim["as_mb"] * mb, lim["as_mb"] * mb))
    out = os.open("/sandbox/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open("/sandbox/err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(marker_fd, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, 1 << 16)  # the channel to the host among them
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    code = 0
    try:
        exec(compile(BOOT, "<codepeft>", "exec"), {"__name__": "__codepeft_boot__"})
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code & 0xFF)

BOOT = sys.argv[1]
runs = 0
for line in channel_in:
    job = json.loads(line)
    wipe("/sandbox")
    wipe("/tmp")
    runs += 1
    ROOT = f"/sandbox/run{runs}"  # a new name: nothing left by an earlier program can be in it
    os.makedirs(ROOT)
    with open(os.path.join(ROOT, "main.py"), "w") as fh:
        fh.write(job["source"])
    read_end, write_end = os.pipe()
    os.write(write_end, (job["marker"] + "\n").encode())
    os.close(write_end)
    sys.stdout.flush()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            child(job, read_end)
        finally:
            os._exit(127)
    os.close(read_end)
    job["marker"] = None
    timed_out, status = False, None
    pidfd = os.pidfd_open(pid)
    if not select.select([pidfd], [], [], job["limits"]["wall"])[0]:
        timed_out = True
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    duration = time.perf_counter() - started
    sweep()
    code = os.waitstatus_to_exitcode(status)
    reply = {
        "exit_code": code,
        "signal": -code if code < 0 else None,
        "timed_out": timed_out,
        "duration_s": duration,
        "stdout": head("/sandbox/out", job["limits"]["output_bytes"]),
        "stderr": head("/sandbox/err", job["limits"]["output_bytes"]),
    }
    for name in ("/sandbox/out", "/sandbox/err"):
        try:
            os.unlink(name)
        except OSError:
            pass
    channel_out.write(json.dumps(reply) + "\n")
    channel_out.flush()
'''


class ZygoteDied(RuntimeError):
    """The zygote ended while running a program (the program killed it, or it was killed)."""


class Zygote:
    """One sandboxed zygote process (bubblewrap level only) and the pipe to it."""

    def __init__(self, boot: str, disk_mb: int):
        hide_from_programs()
        self.own_uid = _is_root() and shutil.which("setpriv") is not None
        self.uid = run_uid()
        self.disk_mb = disk_mb
        self.workdir = Path(tempfile.mkdtemp(prefix="codepeft-zygote-"))
        argv = _setpriv(self.uid) if self.own_uid else []
        argv += _bwrap_argv(self.workdir, _ro_binds(), disk_mb, writable_workdir=False)
        argv += [sandbox_python(), "-I", "-B", "-c", ZYGOTE, boot]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
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
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            reply = _readline(self.proc.stdout, limits.wall_seconds + 30)
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
            _kill_all_of(self.uid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _readline(stream, timeout: float) -> str | None:
    """A line from the zygote, or None when it does not answer within `timeout` seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else None


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

    def run(self, source: str, marker: str, limits: Limits) -> RawRun:
        zygote = self._take(limits.disk_mb)
        try:
            result = zygote.run(source, marker, limits)
        except ZygoteDied:
            return RawRun(exit_code=None, signal=None, timed_out=False, duration_s=0.0, stdout="", stderr="ZygoteDied")
        self._give_back(zygote)
        return result

    def _take(self, disk_mb: int) -> Zygote:
        while True:
            try:
                zygote = self.idle.get_nowait()
            except queue.Empty:
                return Zygote(self.boot, disk_mb)
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
                return

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
