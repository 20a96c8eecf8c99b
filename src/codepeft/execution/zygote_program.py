"""The zygote's own program: runs inside the bubblewrap sandbox, forks one child per job.

`codepeft.execution.zygote` starts it as `python -I -B -c <this file's source> BOOT`, with the
sandbox's interpreter (which may be the system python3, not codepeft's): so it imports nothing
but the standard library. Protocol, one JSON line each way per program:
job {"source", "marker", "limits": {cpu, wall, as_mb, fsize_mb, nproc, output_bytes}} on stdin ->
reply {"exit_code", "signal", "timed_out", "duration_s", "stdout", "stderr"} on stdout.
The child runs BOOT (the one-shot harness's boot code) on /sandbox/run<N>/main.py, with the end
marker on stdin and the channel to the host closed.
"""

import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback

MB = 2**20

# Imported once here, not by every child: runpy (and pkgutil and typing, which its run_path
# imports) and the standard modules most benchmark programs import (HumanEval's typing, math and
# random; the EvalPlus harness's hashlib, base64, io and pickle) cost a fresh interpreter ~10 ms
# a program, longer than most programs run. Each child gets its own copy (fork); `random`
# reseeds itself in every forked child (os.register_at_fork), so no two programs share a stream.
PRELOAD = (
    "runpy", "pkgutil", "typing", "math", "random", "re", "collections", "itertools", "functools",
    "string", "copy", "hashlib", "base64", "io", "pickle", "heapq", "bisect", "operator",
)  # fmt: skip


def live(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def sweep(me: int) -> None:
    """Kill every process of the sandbox but bwrap's init and this zygote, until none is left."""
    keep = {1, me}
    for _ in range(400):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and live(p)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.005)


def wipe(path: str) -> None:
    for root, dirs, _files in os.walk(path):  # first make every directory enterable
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files + dirs:
            full = os.path.join(root, name)
            try:
                is_dir = os.path.isdir(full) and not os.path.islink(full)
                if is_dir:
                    os.chmod(full, 0o700)
                (os.rmdir if is_dir else os.unlink)(full)
            except OSError:
                pass


def head(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        return ""
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[... truncated]" if len(data) > limit else "")


def child(job: dict, marker_fd: int, root: str, boot) -> None:
    """The forked child: limits it cannot raise again, the program's files, then BOOT."""
    os.setsid()
    os.chdir(root)
    lim = job["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize_mb"] * MB, lim["fsize_mb"] * MB))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    if lim["as_mb"] is not None:
        resource.setrlimit(resource.RLIMIT_AS, (lim["as_mb"] * MB, lim["as_mb"] * MB))
    out = os.open("/sandbox/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open("/sandbox/err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(marker_fd, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, 1 << 16)  # the channel to the host among them
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the program's own stdin, left open
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    code = 0
    try:
        exec(boot, {"__name__": "__codepeft_boot__"})
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


def run_one(job: dict, root: str, boot, me: int) -> dict:
    """Fork a child for one job, wait for it within its wall-clock limit, clear the sandbox."""
    os.makedirs(root)
    with open(os.path.join(root, "main.py"), "w") as fh:
        fh.write(job["source"])
    read_end, write_end = os.pipe()
    os.write(write_end, (job["marker"] + "\n").encode())
    os.close(write_end)
    sys.stdout.flush()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            child(job, read_end, root, boot)
        finally:
            os._exit(127)
    os.close(read_end)
    job["marker"] = None
    timed_out = False
    pidfd = os.pidfd_open(pid)
    if not select.select([pidfd], [], [], job["limits"]["wall"])[0]:
        timed_out = True
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    duration = time.perf_counter() - started
    sweep(me)
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
        with contextlib.suppress(OSError):
            os.unlink(name)
    return reply


def warm_up() -> None:
    """Run a failing program once, as a child would: the first traceback printed imports and
    caches more than many programs cost (ast, linecache, tokenize; ~3 ms a child otherwise)."""
    import linecache
    import runpy

    path = "/tmp/codepeft_warm_up.py"
    with open(path, "w") as fh:
        fh.write("def fails():\n    assert 1 + 1 == 3, 'warm-up'\n\nfails()\n")
    try:
        runpy.run_path(path, run_name="__main__")
    except AssertionError:
        traceback.format_exc()
    os.unlink(path)
    linecache.clearcache()


def main() -> None:
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/mem
    me = os.getpid()
    channel_in, channel_out = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    boot = compile(sys.argv[1], "<codepeft>", "exec")  # once: compiling in each child costs more
    for name in PRELOAD:
        importlib.import_module(name)
    warm_up()
    gc.freeze()  # the zygote's objects stay out of the children's collections (fewer copied pages)
    for runs, line in enumerate(channel_in, 1):
        job = json.loads(line)
        wipe("/sandbox")
        wipe("/tmp")
        # a new name each time: nothing left by an earlier program can be in it
        reply = run_one(job, f"/sandbox/run{runs}", boot, me)
        channel_out.write(json.dumps(reply) + "\n")
        channel_out.flush()


if __name__ == "__main__":
    main()
