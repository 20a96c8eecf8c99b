"""The reused sandbox (a zygote forking one process per program): nothing one program does
reaches the next, and a program cannot take the zygote over."""

from __future__ import annotations

import pytest

from codepeft.execution import Limits, Outcome, execute
from codepeft.execution.sandbox import bwrap_works

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="the zygote runs at the bubblewrap level only")
FAST = Limits(cpu_seconds=3, wall_seconds=5, memory_mb=512, file_size_mb=4, processes=16)


def run(source: str):
    return execute(source, "python", FAST, isolation="bwrap")


def test_killing_the_zygote_ends_only_that_program():
    killed = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(1)\n")
    assert killed.outcome is Outcome.ERROR and killed.error_type == "HarnessKilled"
    assert run("assert 1 + 1 == 2").outcome is Outcome.PASSED  # a new zygote took over


def test_a_daemon_left_behind_cannot_touch_the_next_program():
    saboteur = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        end = time.time() + 4
        while time.time() < end:
            for root in ("/sandbox", "/tmp"):
                for dirpath, _, files in os.walk(root):
                    for name in files:
                        try:
                            open(os.path.join(dirpath, name), "w").write("raise SystemExit(0)")
                        except OSError:
                            pass
            for pid in os.listdir("/proc"):
                if pid.isdigit() and int(pid) > 2 and int(pid) != os.getpid():
                    try:
                        os.kill(int(pid), 9)
                    except OSError:
                        pass
        os._exit(0)
    os._exit(0)
open("/tmp/left-by-saboteur", "w").write("x")
time.sleep(0.2)
"""
    run(saboteur)
    victim = """
import os, time
time.sleep(1.0)  # the saboteur, if alive, has had time to act
assert not os.path.exists("/tmp/left-by-saboteur")
others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getppid(), os.getpid())]
assert not others, others
assert open("main.py").read().startswith("\\nimport os, time")
"""
    for _ in range(3):
        result = run(victim)
        assert result.outcome is Outcome.PASSED, result.stderr[-500:]


def test_the_zygote_memory_is_out_of_reach():
    probe = """
import os
ppid = os.getppid()
data = open(f"/proc/{ppid}/mem", "rb")
data.seek(0x400000)
data.read(16)
"""
    result = run(probe)
    assert result.outcome is Outcome.ERROR and result.error_type in ("PermissionError", "OSError"), result.stderr[-300:]


def test_a_zygote_outlives_the_thread_that_first_needed_it():
    """bubblewrap dies with the thread that started it (--die-with-parent): zygotes are started
    from the pool's own thread, so the end of a SandboxPool's worker threads does not kill them."""
    import threading
    import time

    from codepeft.execution.languages import PYTHON_BOOT
    from codepeft.execution.zygote import ZygotePool

    zygotes = ZygotePool(PYTHON_BOOT)
    try:
        worker = threading.Thread(target=zygotes.run, args=("assert 1 + 1 == 2", "M", FAST))
        worker.start()
        worker.join()
        time.sleep(1.0)  # time for a parent-death signal to arrive
        before = zygotes.idle_processes()
        assert before, "the zygote started in the finished thread is gone"
        raw = zygotes.run("assert 1 + 1 == 3", "M", FAST)  # ZygoteDied here if it was killed
        assert raw.exit_code == 1 and "AssertionError" in raw.stderr
        assert zygotes.idle_processes() == before  # the same zygote ran it
    finally:
        zygotes.close()


def test_programs_of_one_zygote_draw_their_own_random_numbers_and_see_no_preloaded_state():
    """The zygote imports common modules once, `random` among them: each program still gets its
    own random stream, and what a program does to a preloaded module stays in its own fork."""
    program = (
        "import math, random, sys, typing\n"
        "print(random.random(), 'random' in sys.modules)\n"
        "assert not hasattr(math, 'tampered')\n"
        "math.tampered = True\n"
        "raise ValueError('the traceback names this line')\n"
    )
    results = [run(program) for _ in range(4)]
    assert all(r.outcome is Outcome.ERROR and r.error_type == "ValueError" for r in results)
    assert all("raise ValueError('the traceback names this line')" in r.stderr for r in results)
    assert len({r.stdout for r in results}) == 4, [r.stdout for r in results]
