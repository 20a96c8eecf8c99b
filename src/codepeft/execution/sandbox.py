"""Run one untrusted program in a fresh process with limits, in the strongest isolation available.

Isolation levels (the result names the one that ran):
- ``bwrap``: bubblewrap (Debian's `bubblewrap`) with new user, pid, network, ipc, uts and mount
  namespaces; the root file system is read-only and holds only /usr (and the interpreter), the
  program sees one private, empty, writable directory; no network at all.
- ``rlimits``: the fallback where bubblewrap is missing or unusable: resource limits, a private
  working directory, a separate user id when we are root, a guard that removes dangerous
  functions, and the kernel confinement an ordinary user can take (`codepeft.execution.confine`:
  no_new_privs, Landlock file / TCP / signal rules, a seccomp filter on sockets and ptrace) where
  the kernel offers it. docs/tasks.md says what each level stops and what stays open.

At every level the codepeft process that launches programs is not dumpable, so a program running
as the same user cannot read its environment (tokens, keys), memory or maps through /proc.

Limits are set with util-linux `prlimit` on the command line (not in a pre-exec hook, which is
unsafe in a threaded pool). When running as root each run gets a user id of its own (via
`setpriv`), so the process-count limit is per program and leftovers can be killed by uid.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from codepeft.errors import CodepeftError
from codepeft.execution import confine
from codepeft.execution.limits import Limits
from codepeft.execution.zygote_program import head  # the zygote's own reader, shared

SLOT_UID_BASE = 100_000


_RUNS = itertools.count()


def run_uid() -> int:
    """A fresh user id for every run: the process limit counts only this program's processes
    (not the exiting ones of the previous run, nor another codepeft process's), and clean-up
    by uid touches nothing else. 4,096 ids per codepeft process, reused in turn."""
    return SLOT_UID_BASE + (os.getpid() % 16384) * 4096 + next(_RUNS) % 4096


@dataclass
class RawRun:
    exit_code: int | None
    signal: int | None
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str


def _world_accessible(path: Path) -> bool:
    path = path.resolve()
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if part != path and not mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o005)


def is_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def sandbox_python() -> str:
    """An interpreter every sandbox user can run: ours if reachable, else the system python3."""
    ours = Path(sys.executable).resolve()
    if not is_root() or _world_accessible(ours):
        return str(ours)
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists() and _world_accessible(Path(candidate)):
            return str(Path(candidate).resolve())
    return str(ours)


def bwrap_argv(workdir: Path, ro_binds: list[str], disk_mb: int = 64, writable_workdir: bool = True) -> list[str]:
    """The program's files are read-only inside a size-capped tmpfs (it cannot alter the harness
    or fill the host's disk); a trusted compiler gets the host directory writable instead."""
    size = ["--size", str(disk_mb * 2**20)]
    argv = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in ("lib", "lib64", "bin", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), str(target)]
    for path in ro_binds:
        if Path(path).exists() and not path.startswith("/usr/"):
            argv += ["--ro-bind", path, path]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *size,
        "--tmpfs",
        "/tmp",
    ]
    if writable_workdir:
        argv += ["--bind", str(workdir), "/sandbox"]
    else:
        argv += [*size, "--perms", "0777", "--tmpfs", "/sandbox"]
        for path in sorted(workdir.iterdir()):
            argv += ["--ro-bind", str(path), f"/sandbox/{path.name}"]
    argv += [
        "--chdir",
        "/sandbox",
        "--setenv",
        "HOME",
        "/sandbox",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",  # the host's TMPDIR (the working directory outside) does not exist in here
        "TMPDIR",
        "/tmp",
        "--remount-ro",
        "/",
    ]
    return argv


@functools.cache
def bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        argv = bwrap_argv(Path(tmp), []) + ["/usr/bin/env", "true"]
        if is_root() and shutil.which("setpriv"):
            argv = setpriv_argv(run_uid()) + argv
        try:
            return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


class Isolation(StrEnum):
    """How strongly a program is kept apart (docs/tasks.md); `auto` picks the strongest that works."""

    AUTO = "auto"
    BWRAP = "bwrap"
    RLIMITS = "rlimits"


class SandboxUnavailable(CodepeftError):
    """The isolation level asked for cannot run on this machine."""


def detect_isolation(requested: str = "auto") -> Isolation:
    """The level programs will run at: the one requested, or for `auto` bubblewrap where it
    works and rlimits elsewhere. A level that cannot run is refused, never silently weakened."""
    try:
        level = Isolation(requested)
    except ValueError:
        raise CodepeftError(f"isolation must be {', '.join(i.value for i in Isolation)}, not {requested!r}") from None
    if level is Isolation.RLIMITS:
        return level
    if bwrap_works():
        return Isolation.BWRAP
    if level is Isolation.BWRAP:
        raise SandboxUnavailable(
            "isolation 'bwrap' asked for, but bubblewrap is not installed or cannot create namespaces here "
            "(install it: apt-get install bubblewrap; or choose --isolation rlimits, the weaker level)"
        )
    return Isolation.RLIMITS


@functools.cache
def hide_from_programs() -> None:
    """Make this process non-dumpable: /proc/<pid>/environ, mem and maps then need ptrace rights
    that a program of the same user lacks, so the secrets in codepeft's environment (HF_TOKEN,
    WANDB_API_KEY, cloud credentials) stay out of reach. Called before any program is launched;
    a process started by exec (a study worker) calls it again, as the flag does not survive exec."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0


# What a confined program may read besides its interpreter and language toolchain: the system's
# libraries and the few device and kernel files runtimes consult. Not $HOME, /tmp or other /proc entries.
SYSTEM_READ = [
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
]


def _confine_spec(workdir: Path, ro_binds: list[str], require: list[str], probe: bool = False) -> str:
    python_prefix = str(Path(sandbox_python()).parent.parent)
    read = [*SYSTEM_READ, python_prefix, *ro_binds]
    spec = {"read": read, "write": [str(workdir), "/dev/null"], "require": require, "probe": probe}
    return json.dumps({**spec, "parent": os.getpid()})


@functools.cache
def module_source(module) -> str:
    """The source of a stdlib-only module that the sandbox's interpreter runs with `-c`
    (it may be the system python3, which cannot import codepeft)."""
    return Path(module.__file__).read_text()


def _confine_argv(spec: str) -> list[str]:
    return [sandbox_python(), "-I", "-S", "-c", module_source(confine), spec]


@functools.cache
def confinement() -> dict:
    """What kernel confinement this machine gives the rlimits level, probed once:
    {"landlock": bool, "seccomp": bool, "landlock_abi": int}; {} where none can be applied."""
    if not sys.platform.startswith("linux"):
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        argv = _confine_argv(_confine_spec(Path(tmp), [], [], probe=True))
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
            return json.loads(out.stdout) if out.returncode == 0 else {}
        except (OSError, subprocess.SubprocessError, ValueError):
            return {}


def setpriv_argv(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def _prlimit(limits: Limits, own_uid: bool) -> list[str]:
    cpu = int(limits.cpu_seconds + 0.999)
    argv = ["prlimit", f"--cpu={cpu}:{cpu + 1}", f"--fsize={limits.file_size_mb * 2**20}", "--core=0"]
    if limits.memory_mb is not None:
        argv.append(f"--as={limits.memory_mb * 2**20}")
    # Without a uid of its own, the process limit counts every process of this user: leave room for them.
    nproc = limits.processes if own_uid else limits.processes + len(_processes_of(os.getuid()))
    argv.append(f"--nproc={nproc}")
    return argv + ["--"]


def _processes_of(uid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"] and proc.info["uids"].real == uid:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def run_sandboxed(
    argv: list[str],
    workdir: Path,
    limits: Limits,
    isolation: str,
    ro_binds: list[str] | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    writable_workdir: bool = False,
) -> RawRun:
    """Run argv (paths relative to the working directory) and return what happened. `stdin`
    is fed to the program and closed (the harness passes its end marker this way, so no file
    the program can read holds it)."""
    hide_from_programs()
    own_uid = is_root() and shutil.which("setpriv") is not None
    uid = run_uid()
    os.chmod(workdir, 0o777)
    full: list[str] = []
    if shutil.which("prlimit"):
        full += _prlimit(limits, own_uid)
    if own_uid:
        full += setpriv_argv(uid)
    if isolation == "bwrap":
        full += bwrap_argv(workdir, ro_binds or [], limits.disk_mb, writable_workdir)
        cwd = None
    else:
        cwd = workdir
        applied = [name for name in ("landlock", "seccomp") if confinement().get(name)]
        if applied:
            full += _confine_argv(_confine_spec(workdir, ro_binds or [], applied))
    full += argv
    with tempfile.TemporaryDirectory() as outdir:
        out_path, err_path = Path(outdir) / "stdout", Path(outdir) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(
                full,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                cwd=cwd,
                start_new_session=True,
                env=env or {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"},
            )
            if stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(stdin.encode())
                proc.stdin.close()
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
            duration = time.perf_counter() - started
        if own_uid:  # anything of this run still alive escaped the process group: end it
            kill_all_of(uid)
        code = proc.returncode
        sig = -code if code is not None and code < 0 else None
        if isolation == "bwrap" and code is not None and code > 128 and not timed_out:
            sig = code - 128  # bwrap reports a signalled child as 128 + signal
        return RawRun(
            exit_code=code,
            signal=sig,
            timed_out=timed_out,
            duration_s=duration,
            stdout=head(str(out_path), limits.output_bytes),
            stderr=head(str(err_path), limits.output_bytes),
        )


def kill_all_of(uid: int, patience_s: float = 5.0) -> None:
    """Kill every live process of `uid`, again and again: one that was forking while we looked
    may have left a child we did not see yet."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        alive = []
        for proc in _processes_of(uid):
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
                    alive.append(proc)
        if not alive:
            return
        psutil.wait_procs(alive, timeout=0.2)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
