"""The outcome of running one program, classified."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Outcome(StrEnum):
    PASSED = "passed"  # the tests ran to their end
    FAILED = "failed"  # an assertion failed
    ERROR = "error"  # another exception, or an exit before the tests finished
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit
    KILLED = "killed"  # a resource limit: memory, file size / output, processes
    COMPILE_ERROR = "compile_error"


@dataclass
class ExecResult:
    outcome: Outcome
    exit_code: int | None
    duration_s: float
    isolation: str
    error_type: str | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def to_dict(self) -> dict:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d
