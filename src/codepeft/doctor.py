"""What this machine can do for codepeft, and what a config needs that it lacks (`codepeft doctor`).

Each check is a `Check`: a name, a status (ok / missing / warn / info), what was found, and
whether the given config needs it. `study_checks(config)` is the same list for a study; a study
runs it before its first cell and refuses to start when something it needs is missing, so a
grid does not fail cell by cell hours in.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OK, MISSING, WARN, INFO = "ok", "missing", "warn", "info"
LOW_DISK_GB = 5.0

# The command that prints each language toolchain's version (the first line is shown).
VERSION_ARGV = {
    "java": ["javac", "-version"],
    "javascript": ["node", "--version"],
    "cpp": ["g++", "--version"],
    "go": ["go", "version"],
    "rust": ["/usr/bin/rustc", "--version"],  # Debian's: the one programs are built with
}


@dataclass
class Check:
    name: str
    status: str
    found: str
    needed: bool = False

    @property
    def blocks(self) -> bool:
        return self.needed and self.status == MISSING


@functools.cache
def _version(*argv: str) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def isolation_checks(requested: str | None = None) -> list[Check]:
    """The levels this machine offers and the one a run will use. `requested`: a study's
    `eval.isolation` (checked with the study's rule), None: what `codepeft eval` would use."""
    from codepeft.errors import CodepeftError
    from codepeft.execution.levels import study_isolation, uncontained, why_not_bwrap
    from codepeft.execution.sandbox import bwrap_works, confinement, detect_isolation

    kernel = confinement()
    confined = ", ".join(
        part
        for part, on in (
            (f"Landlock ABI {kernel.get('landlock_abi')}", kernel.get("landlock")),
            ("seccomp", kernel.get("seccomp")),
        )
        if on
    )
    checks = [
        Check("isolation: bwrap", OK if bwrap_works() else WARN, "namespaces" if bwrap_works() else why_not_bwrap()),
        Check("isolation: rlimits", OK, f"resource limits + {confined or 'no kernel confinement'}"),
    ]
    needed = requested is not None
    try:
        level = study_isolation(requested) if needed else detect_isolation("auto")
    except CodepeftError as err:
        return [*checks, Check("isolation: used", MISSING, str(err), needed)]
    gaps = uncontained(level)
    found = level.value + (f" (not contained: {'; '.join(gaps)})" if gaps else " (nothing left open but own memory)")
    return [*checks, Check("isolation: used", WARN if gaps else OK, found, needed)]


def toolchain_checks(languages: set[str] | None = None) -> list[Check]:
    """Each language's toolchain: found with its version, or what to install."""
    from codepeft.execution import LANGUAGES
    from codepeft.execution.sandbox import sandbox_python

    checks = []
    for name, lang in LANGUAGES.items():
        missing = lang.missing()
        needed = languages is not None and name in languages
        if missing:
            checks.append(Check(f"language: {name}", MISSING, missing, needed))
            continue
        argv = [sandbox_python(), "--version"] if name == "python" else VERSION_ARGV[name]
        checks.append(Check(f"language: {name}", OK, _version(*argv), needed))
    return checks


def accelerator_checks(needs_bnb: bool = False, needs_gpu: bool = False) -> list[Check]:
    import torch

    from codepeft.models.hardware import fast_cpu_bf16

    checks = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        found = "; ".join(f"{g.name}, {g.total_memory / 2**30:.0f} GiB" for g in gpus)
        checks.append(Check("CUDA GPU", OK, f"{found} (CUDA {torch.version.cuda})", needs_gpu))
    else:
        checks.append(
            Check("CUDA GPU", MISSING if needs_gpu else INFO, "none: training and generation run on the CPU", needs_gpu)
        )
    checks.append(Check("CPU bf16", INFO, "fast (AVX512_BF16 / AMX): bf16" if fast_cpu_bf16() else "slow here: fp32"))
    if importlib.util.find_spec("bitsandbytes") is None:
        checks.append(Check("bitsandbytes", MISSING, "not installed (pip install bitsandbytes)", needs_bnb))
    else:
        try:
            import bitsandbytes
            from bitsandbytes.cextension import BNB_BACKEND

            found = f"{bitsandbytes.__version__}, backend {BNB_BACKEND}"
            if BNB_BACKEND == "CPU":
                found += " (4/8-bit run on the CPU, slower than on a GPU)"
            checks.append(Check("bitsandbytes", OK, found, needs_bnb))
        except Exception as err:  # noqa: BLE001 - a broken install is reported, not raised
            checks.append(Check("bitsandbytes", MISSING, f"cannot load: {type(err).__name__}: {err}", needs_bnb))
    from codepeft.generation.backends import vllm_usable

    if vllm_usable():
        checks.append(Check("vLLM", OK, "installed, with a GPU: --backend vllm available"))
    elif importlib.util.find_spec("vllm") is None:
        checks.append(Check("vLLM", INFO, "not installed (GPU only: pip install vllm)"))
    else:
        checks.append(Check("vLLM", INFO, "installed, but no GPU: generation uses transformers"))
    return checks


def human_bytes(n: float) -> str:
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def storage_checks(where: Path | None = None) -> list[Check]:
    from codepeft.paths import cache_dir

    cache = cache_dir()
    checks = [Check("cache", INFO, str(cache))]
    models = sorted((cache / "models").iterdir()) if (cache / "models").is_dir() else []
    for model in models:
        if model.is_dir():
            checks.append(Check(f"built model: {model.name}", OK, human_bytes(_size(model))))
    if not models:
        checks.append(Check("built models", INFO, "none yet (codepeft bootstrap NAME builds one)"))
    for label, path in (("free disk (cache)", cache), ("free disk (here)", where or Path.cwd())):
        probe = path if path.exists() else next(p for p in path.parents if p.exists())
        free = shutil.disk_usage(probe).free
        low = free < LOW_DISK_GB * 2**30
        checks.append(Check(label, WARN if low else OK, f"{human_bytes(free)} at {probe}" + (" (low)" if low else "")))
    return checks


def machine_checks() -> list[Check]:
    """Everything, nothing marked as needed (`codepeft doctor` without a config)."""
    return isolation_checks() + toolchain_checks() + accelerator_checks() + storage_checks()


def study_tasks(config) -> list:
    """Every task a study evaluates (the common ones and each training set's own)."""
    from codepeft.tasks import get_task

    names = {*config.eval.tasks, *(t for d in config.datasets for t in d.tasks)}
    return [get_task(t, config.eval.task_data.get(t)) for t in sorted(names)]


def study_checks(config) -> list[Check]:
    """The machine's checks with what the study `config` needs marked: the languages of its
    tasks that run code, the isolation it asks for, bitsandbytes for a quantised base, a GPU
    for `device: cuda`."""
    languages = {t.language for t in study_tasks(config) if t.needs_sandbox}
    specs = [m.model_dump() for m in config.models] + [m.model.model_dump(exclude_none=True) for m in config.methods]
    quantised = any(s.get("quantization", "none") != "none" for s in specs) or any(
        m.name == "qlora" for m in config.methods
    )
    gpu = any(s.get("device") == "cuda" for s in specs)
    checks = isolation_checks(config.eval.isolation) if languages else isolation_checks()
    checks += toolchain_checks(languages) + accelerator_checks(quantised, gpu) + storage_checks(config.directory)
    return checks


def run_checks(config) -> list[Check]:
    """The same for a training run config (`codepeft train`)."""
    needs_bnb = config.model.quantization != "none" or config.method.name == "qlora"
    return toolchain_checks(set()) + accelerator_checks(needs_bnb, config.model.device == "cuda") + storage_checks()


def blocking(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.blocks]
