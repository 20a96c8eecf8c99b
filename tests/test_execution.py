"""The sandbox: outcomes are classified, limits hold, and nothing escapes to the host."""

from __future__ import annotations

import os
import socket
import threading
import time

import psutil
import pytest

from codepeft.execution import Limits, Outcome, SandboxPool, detect_isolation, execute
from codepeft.execution.sandbox import bwrap_works

LEVELS = ["bwrap", "rlimits"] if bwrap_works() else ["rlimits"]
FAST = Limits(cpu_seconds=2, wall_seconds=4, memory_mb=512, file_size_mb=4, processes=16)


@pytest.fixture(params=LEVELS)
def level(request):
    return request.param


def run(source, level, limits=FAST, language="python"):
    return execute(source, language, limits, isolation=level)


def test_bubblewrap_is_used_when_present():
    # CI installs Debian's bubblewrap; without it the fallback must say so in every result.
    assert detect_isolation("auto") == ("bwrap" if bwrap_works() else "rlimits")
    assert run("pass", "auto").isolation == detect_isolation("auto")


def test_classification(level):
    assert run("assert 1 + 1 == 2", level).outcome is Outcome.PASSED
    failed = run("assert 1 + 1 == 3, 'math'", level)
    assert failed.outcome is Outcome.FAILED and failed.error_type == "AssertionError"
    error = run("{}['missing']", level)
    assert error.outcome is Outcome.ERROR and error.error_type == "KeyError"
    syntax = run("def f(:\n  pass", level)
    assert syntax.outcome is Outcome.COMPILE_ERROR
    printed = run("print('hello')", level)
    assert printed.stdout.strip() == "hello" and printed.isolation == level


@pytest.mark.parametrize("exit_call", ["import os; os._exit(0)", "import sys; sys.exit(0)", "raise SystemExit"])
def test_exit_before_tests_is_not_a_pass(level, exit_call):
    result = run(f"{exit_call}\nassert False", level)
    assert result.outcome is Outcome.ERROR and result.exit_code == 0


def test_infinite_loop_times_out(level):
    started = time.perf_counter()
    result = run("while True:\n    pass", level)
    assert result.outcome is Outcome.TIMEOUT
    assert time.perf_counter() - started < FAST.wall_seconds + 3


def test_sleeping_program_hits_wall_clock(level):
    result = run("import time\ntime.sleep(60)", level)
    assert result.outcome is Outcome.TIMEOUT and result.error_type == "WallTimeout"


def _process_count() -> int:
    return len(psutil.pids())


def test_fork_bomb_is_contained(level):
    before = _process_count()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except Exception:\n        pass\n"
    result = run(bomb, level)
    assert result.outcome in (Outcome.KILLED, Outcome.TIMEOUT, Outcome.ERROR)
    time.sleep(0.5)
    assert _process_count() <= before + 2, "fork bomb left processes behind on the host"


def test_memory_hog_is_killed(level):
    result = run("x = bytearray(4 * 1024**3)\nassert False", level)
    assert result.outcome is Outcome.KILLED and result.error_type == "MemoryError"


def test_cannot_write_or_delete_outside(level, tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    os.chmod(tmp_path, 0o777)  # even a world-writable host directory stays out of reach
    outside = "/tmp/codepeft-escape-test.txt"
    if os.path.exists(outside):
        os.remove(outside)
    program = (
        "import os\n"
        f"for p in ({str(victim)!r},):\n"
        "    try:\n        os.remove(p)\n    except Exception:\n        pass\n"
        f"for p in ({outside!r}, {str(tmp_path / 'new.txt')!r}, '/etc/codepeft-escape'):\n"
        "    try:\n        open(p, 'w').write('x')\n    except Exception:\n        pass\n"
        "open('inside.txt', 'w').write('ok')  # its own directory is writable\n"
        "assert open('inside.txt').read() == 'ok'\n"
    )
    result = run(program, level)
    assert result.outcome is Outcome.PASSED, result
    assert victim.read_text() == "precious"
    assert not os.path.exists(outside) and not (tmp_path / "new.txt").exists()
    assert not os.path.exists("/etc/codepeft-escape")


def test_no_network(level):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    got = []

    def accept():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\n"
    result = run(program, level)
    t.join()
    server.close()
    assert result.outcome is Outcome.ERROR and not got


def test_killing_the_parent_does_not_reach_the_host(level):
    me = os.getpid()
    program = (
        "import os, signal\n"
        f"for pid in (os.getppid(), 1, {me}):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except Exception as e:\n        print(type(e).__name__)\n"
    )
    run(program, level)
    # we (the host test process) are alive, and the sandbox still works
    assert psutil.pid_exists(me) and run("assert True", level).outcome is Outcome.PASSED


def test_printing_gigabytes_is_cut(level):
    started = time.perf_counter()
    result = run("while True:\n    print('x' * 1_000_000)", level)
    assert result.outcome is Outcome.KILLED and result.error_type == "FileSizeLimit"
    assert len(result.stdout) <= FAST.output_bytes + 20
    assert time.perf_counter() - started < FAST.wall_seconds + 3


def test_pool_is_not_stalled_by_a_hung_program(level):
    pool = SandboxPool(workers=2, isolation=level)
    slow = Limits(cpu_seconds=30, wall_seconds=6, memory_mb=512)
    jobs = [("import time\ntime.sleep(100)", "python", slow)] + [
        (f"assert {i} == {i}", "python", FAST) for i in range(6)
    ]
    started = time.perf_counter()
    results = pool.map(jobs)
    assert results[0].outcome is Outcome.TIMEOUT
    assert all(r.outcome is Outcome.PASSED for r in results[1:])
    assert time.perf_counter() - started < 6 + 5  # the quick ones ran beside the hung one


JAVA_OK = """
import java.util.*;
class Solution { public int add(int a, int b) { return a + b; } }
public class Main {
    public static void main(String[] args) {
        Solution s = new Solution();
        if (s.add(2, 3) != 5) throw new AssertionError();
    }
}
"""


@pytest.mark.skipif(not __import__("shutil").which("javac"), reason="no javac on this machine")
def test_java_compile_error_vs_runtime_failure():
    limits = None
    assert execute(JAVA_OK, "java", limits).outcome is Outcome.PASSED
    wrong = execute(JAVA_OK.replace("a + b", "a - b"), "java", limits)
    assert wrong.outcome is Outcome.FAILED and wrong.error_type == "AssertionError"
    crash = execute(JAVA_OK.replace("return a + b;", "return a / (b - b);"), "java", limits)
    assert crash.outcome is Outcome.ERROR and crash.error_type == "ArithmeticException"
    broken = execute(JAVA_OK.replace("return a + b;", "return a + ;"), "java", limits)
    assert broken.outcome is Outcome.COMPILE_ERROR
    early = execute(JAVA_OK.replace("Solution s =", "System.exit(0); Solution s ="), "java", limits)
    assert early.outcome is Outcome.ERROR
