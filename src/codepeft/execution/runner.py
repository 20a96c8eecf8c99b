"""Run programs and classify what happened; a pool runs many at once."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from codepeft.errors import CodepeftError
from codepeft.execution.languages import LANGUAGES, Language
from codepeft.execution.limits import Limits
from codepeft.execution.outcome import ExecResult, Outcome
from codepeft.execution.sandbox import Isolation, RawRun, detect_isolation, run_sandboxed
from codepeft.execution.zygote import ZygoteDied, shared_zygotes


def get_language(name: str) -> Language:
    if name not in LANGUAGES:
        raise CodepeftError(f"unsupported language {name!r}; supported: {', '.join(LANGUAGES)}")
    return LANGUAGES[name]


def classify(raw: RawRun, marker: str, lang: Language, limits: Limits) -> tuple[Outcome, str | None]:
    """Passed only when the tests ran to the end: the run printed our unguessable end marker."""
    if raw.timed_out:
        return Outcome.TIMEOUT, "WallTimeout"
    if raw.signal == signal.SIGXCPU or (raw.signal == signal.SIGKILL and raw.duration_s >= limits.cpu_seconds):
        return Outcome.TIMEOUT, "CPUTimeLimit"
    if raw.signal == signal.SIGXFSZ or "[Errno 27] File too large" in raw.stderr:  # Python ignores SIGXFSZ
        return Outcome.KILLED, "FileSizeLimit"
    error = lang.error_type(raw.stderr)
    if error == "MemoryError" or "OutOfMemoryError" in (error or ""):
        return Outcome.KILLED, error
    if error == "BlockingIOError" and "Resource temporarily unavailable" in raw.stderr:
        return Outcome.KILLED, "ProcessLimit"
    if raw.exit_code == 0 and marker in raw.stdout:
        return Outcome.PASSED, None
    if raw.signal == signal.SIGABRT and lang.is_assertion(error):  # C and C++ assert() aborts
        return Outcome.FAILED, error
    if raw.signal is not None:
        return Outcome.KILLED, signal.Signals(raw.signal).name if raw.signal in signal.valid_signals() else None
    if lang.is_assertion(error):
        return Outcome.FAILED, error
    if raw.exit_code == 0:
        return Outcome.ERROR, "ExitedBeforeTestsFinished"
    return Outcome.ERROR, error or f"ExitCode{raw.exit_code}"


def execute(
    source: str,
    language: str = "python",
    limits: Limits | None = None,
    isolation: str = "auto",
) -> ExecResult:
    """Run one program (its tests included) in the sandbox and classify the outcome."""
    lang = get_language(language)
    limits = limits or lang.limits
    level = detect_isolation(isolation)
    syntax = lang.syntax_error(source)
    if syntax is not None:
        return ExecResult(Outcome.COMPILE_ERROR, None, 0.0, level, "SyntaxError", stderr=syntax[: limits.output_bytes])
    marker = f"__codepeft_done_{secrets.token_hex(16)}__"
    total = 0.0
    if level is Isolation.BWRAP and lang.name == "python" and reuse_sandbox():
        try:
            raw = shared_zygotes().run(source, marker, limits)
        except ZygoteDied:  # the program killed its zygote: its run ends there
            return ExecResult(Outcome.ERROR, None, 0.0, level, "HarnessKilled")
    else:
        with tempfile.TemporaryDirectory(prefix="codepeft-sbx-") as tmp:
            workdir = Path(tmp)
            lang.write(source, workdir, guard=level == "rlimits")
            compile_argv = lang.compile_argv()
            if compile_argv:
                raw = run_sandboxed(compile_argv, workdir, limits, level, lang.ro_binds(), writable_workdir=True)
                total += raw.duration_s
                if raw.timed_out or raw.exit_code != 0:
                    outcome = Outcome.TIMEOUT if raw.timed_out else Outcome.COMPILE_ERROR
                    return ExecResult(outcome, raw.exit_code, total, level, "CompileError", raw.stdout, raw.stderr)
            raw = run_sandboxed(lang.run_argv(), workdir, limits, level, lang.ro_binds(), stdin=marker + "\n")
    outcome, error = classify(raw, marker, lang, limits)
    stdout = raw.stdout.replace(marker + "\n", "").replace(marker, "")
    return ExecResult(outcome, raw.exit_code, total + raw.duration_s, level, error, stdout, raw.stderr)


def reuse_sandbox() -> bool:
    """Python programs at the bubblewrap level run in forks of a long-lived sandboxed zygote
    (`codepeft.execution.zygote`); CODEPEFT_SANDBOX_REUSE=0 starts a fresh sandbox per program."""
    return os.environ.get("CODEPEFT_SANDBOX_REUSE", "1") != "0"


class SandboxPool:
    """Runs many programs at once; each has its own limits, so one hung program stalls nothing."""

    def __init__(self, workers: int = 2, isolation: str = "auto"):
        from codepeft.execution.levels import warn_if_weak

        self.workers = max(1, workers)
        self.isolation = detect_isolation(isolation)
        warn_if_weak(self.isolation)

    def _run(self, job: tuple[str, str, Limits | None]) -> ExecResult:
        source, language, limits = job
        return execute(source, language, limits, self.isolation)

    def map(self, jobs: Iterable[tuple[str, str, Limits | None]]) -> list[ExecResult]:
        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(self._run, jobs))
