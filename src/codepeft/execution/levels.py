"""Which isolation level a command runs generated programs at, and what a weaker level leaves open.

The sandbox (`codepeft.execution.sandbox`) refuses a level it cannot give; this module is the
policy above it, shared by every command that executes generated code and by `codepeft doctor`:
- `uncontained(level)`: what a program at that level can still reach on this machine, from the
  kernel probe (docs/tasks.md, "What stays open, per level").
- `warn_if_weak(level)`: one warning on stderr per process naming those gaps, so a run below
  namespaces is never silent.
- `study_isolation(requested)`: a study's default. `auto` requires bubblewrap where it works or
  could be installed (root with apt-get: the study refuses to start and says how to install it),
  and falls back to rlimits, with the warning, only where it cannot be had.
"""

from __future__ import annotations

import shutil
import sys

from codepeft.execution.sandbox import (
    Isolation,
    SandboxUnavailable,
    bwrap_works,
    confinement,
    detect_isolation,
    is_root,
)

INSTALL = "apt-get install bubblewrap, or bash scripts/setup.sh as root"


def bwrap_installable() -> bool:
    """bubblewrap is missing and this process could install it (root with apt-get)."""
    return shutil.which("bwrap") is None and is_root() and shutil.which("apt-get") is not None


def why_not_bwrap() -> str:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed"
    return "bubblewrap is installed but cannot create namespaces here (unprivileged user namespaces are off)"


def uncontained(level: Isolation | str) -> list[str]:
    """What a program run at `level` is not kept from, on this machine."""
    if Isolation(level) is Isolation.BWRAP:
        return []
    kernel = confinement()
    landlock, seccomp, abi = kernel.get("landlock"), kernel.get("seccomp"), kernel.get("landlock_abi", 0)
    gaps = ["the disk (only each file's size is capped, not how many it writes)"]
    if not landlock:
        gaps += ["your files (home, /tmp: readable, and writable where permissions allow)"]
        gaps += ["the environment of your other processes (a shell that exported a token)"]
    elif abi < 6 and not is_root():
        gaps.append("signals to your other processes")
    if not seccomp and not (landlock and abi >= 4):
        gaps.append("the network")
    elif not seccomp:
        gaps.append("UDP and Unix sockets")
    return gaps


def weak_warning(level: Isolation | str) -> str | None:
    """The warning for a run below namespaces; None at the bubblewrap level."""
    gaps = uncontained(level)
    if not gaps:
        return None
    return (
        f"warning: generated programs run at isolation '{Isolation(level).value}', not in namespaces "
        f"({why_not_bwrap()}). Not contained: {'; '.join(gaps)}. "
        f"Install bubblewrap for full isolation: {INSTALL}; or pass --isolation bwrap to refuse to run without it."
    )


_warned: set[str] = set()


def warn_if_weak(level: Isolation | str) -> None:
    """Print the weak-isolation warning on stderr, once per process and level."""
    text = weak_warning(level)
    if text and text not in _warned:
        _warned.add(text)
        print(text, file=sys.stderr, flush=True)


def study_isolation(requested: str = "auto") -> Isolation:
    """The level a study's cells run programs at (they are given it explicitly, so a worker can
    never fall back on its own). `auto`: bubblewrap where it works; refused where it is missing
    but installable; rlimits, warned, where it cannot be had."""
    if requested == Isolation.AUTO and not bwrap_works() and bwrap_installable():
        raise SandboxUnavailable(
            "this study runs generated code, and bubblewrap (the namespace sandbox) is not installed but can be: "
            f"{INSTALL}; or set eval.isolation: rlimits (--isolation rlimits) to accept the weaker level"
        )
    level = detect_isolation(requested)
    warn_if_weak(level)
    return level
