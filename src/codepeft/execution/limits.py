"""Resource limits of one sandboxed program."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    cpu_seconds: float = 10.0
    wall_seconds: float = 15.0
    memory_mb: int | None = 2048  # address space; None for runtimes that reserve it up front (the JVM)
    file_size_mb: int = 16  # any file the program writes, its stdout and stderr included
    disk_mb: int = 64  # all files it writes together (bubblewrap level: size-capped tmpfs)
    processes: int = 32
    output_bytes: int = 8192  # how much stdout / stderr is kept in the result
