"""Sandboxed execution of untrusted generated programs (Python, Java)."""

from codepeft.execution.languages import LANGUAGES, Language
from codepeft.execution.limits import Limits
from codepeft.execution.outcome import ExecResult, Outcome
from codepeft.execution.runner import SandboxPool, classify, execute, get_language
from codepeft.execution.sandbox import detect_isolation

__all__ = [
    "LANGUAGES",
    "ExecResult",
    "Language",
    "Limits",
    "Outcome",
    "SandboxPool",
    "classify",
    "detect_isolation",
    "execute",
    "get_language",
]
