"""`evaluate_together(targets, tasks)`: several runs and models of one base model evaluated in
one process, the base loaded once.

Targets that can share generation batches are grouped by the base they load (the same weights,
dtype and quantisation): the base itself (zero-shot and the prompting baselines: "__base__"
rows) and LoRA runs over it (each adapter loaded into one peft model under its own name). A
group's members run their usual per-task evaluation (`codepeft.evaluation.evaluate_task`) in a
thread each and generate through `codepeft.generation.together`, so their batches are merged
into one mixed-adapter batch; loss tasks score each member in turn with its adapter active.
Every other target (full fine-tuning, prompt / prefix tuning, (IA)3, LoHa, bottleneck adapters,
DoRA: what peft cannot run in a mixed batch, and a group of one) is evaluated one at a time, as
`codepeft.evaluation.evaluate` does. Results are the ones separate evaluation writes (on a bf16
base a long greedy completion can part late in the text where CPU kernels round a batch of a
different size differently; README, "Studies").
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codepeft.config import ModelSpec
from codepeft.evaluation import Evaluand, evaluate, evaluate_task, refuse_unavailable, target_info
from codepeft.execution import SandboxPool
from codepeft.generation import GenerationSettings, HFBackend
from codepeft.generation.together import BASE, Together
from codepeft.tasks import get_task


@dataclass
class Target:
    """One evaluation of the group: what `evaluate` would be called with for it."""

    target: str  # a run directory or a model
    output_dir: Path
    settings: GenerationSettings
    method: str | None = None  # a prompting baseline of the method registry
    method_options: dict[str, Any] | None = None


def evaluate_together(
    targets: list[Target],
    tasks: list[str],
    ks: list[int],
    limit: int | None = None,
    limits: dict[str, int] | None = None,
    prompt_format: str | None = None,
    workers: int = 2,
    device: str = "auto",
    task_data: dict[str, str] | None = None,
    isolation: str = "auto",
) -> list[dict[str, dict] | Exception]:
    """Each target's results ({task: result}, as `evaluate` returns), or the error that stopped
    it; one target's error does not stop the others."""
    task_data = task_data or {}
    task_objs = [get_task(t, task_data.get(t)) for t in tasks]
    refuse_unavailable(task_objs)
    pool = _OneMapAtATime(SandboxPool(workers, isolation)) if any(t.needs_sandbox for t in task_objs) else None
    groups, alone = shareable(targets, device)
    results: list[dict[str, dict] | Exception] = [{} for _ in targets]
    for spec, members in groups:
        for i, outcome in zip(
            members,
            _evaluate_group(
                spec, [targets[i] for i in members], task_objs, ks, limit, limits, prompt_format, pool, device
            ),
            strict=True,
        ):
            results[i] = outcome
    for i in alone:
        t = targets[i]
        try:
            results[i] = evaluate(
                t.target,
                tasks,
                t.settings,
                ks,
                limit=limit,
                limits=limits,
                output_dir=t.output_dir,
                prompt_format=prompt_format,
                backend="hf",
                workers=workers,
                device=device,
                task_data=task_data,
                method=t.method,
                method_options=t.method_options,
                isolation=isolation,
            )
        except Exception as err:  # noqa: BLE001 - one target's failure is its own
            results[i] = err
    return results


def shareable(targets: list[Target], device: str = "auto") -> tuple[list[tuple[ModelSpec, list[int]]], list[int]]:
    """([(base spec, indices of the targets that generate over it together)], the other indices)."""
    from codepeft.training.artifacts import run_model_spec

    by_base: dict[tuple, tuple[ModelSpec, list[int]]] = {}
    alone = []
    for i, t in enumerate(targets):
        info = target_info(t.target)
        if info["kind"] == "model":
            spec = ModelSpec(name_or_path=t.target, device=device)
        elif mixable_adapter(Path(t.target) / "adapter"):
            spec = run_model_spec(Path(t.target), json.loads((Path(t.target) / "run.json").read_text()), device)
        else:
            alone.append(i)
            continue
        by_base.setdefault(_base_key(spec), (spec, []))[1].append(i)
    groups = []
    for spec, members in by_base.values():
        if len(members) > 1:
            groups.append((spec, members))
        else:
            alone.extend(members)
    return groups, sorted(alone)


def mixable_adapter(adapter_dir: Path) -> bool:
    """A LoRA adapter peft can run in a mixed batch (DoRA cannot)."""
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text())
    return data.get("peft_type") == "LORA" and not data.get("use_dora")


def _base_key(spec: ModelSpec) -> tuple:
    from codepeft.models.builtin import resolve_name
    from codepeft.models.hardware import resolve_dtype
    from codepeft.models.loading import resolve_device

    device = resolve_device(spec.device)
    name = resolve_name(spec.name_or_path)
    where = str(Path(name).resolve()) if Path(name).exists() else name
    return (where, resolve_dtype(spec.dtype, device)[0], device, spec.quantization, spec.revision)


def _evaluate_group(spec, members: list[Target], task_objs, ks, limit, limits, prompt_format, pool, device):
    from peft import PeftModel

    from codepeft.baselines import make_baseline
    from codepeft.models.builtin import resolve_name
    from codepeft.models.loading import load_model, load_tokenizer

    model, tok = load_model(spec)
    adapters = {}
    for i, t in enumerate(members):
        if target_info(t.target)["kind"] == "run":
            adapters[str(i)] = f"member{i}"
            path = Path(t.target) / "adapter"
            if isinstance(model, PeftModel):
                model.load_adapter(str(path), adapter_name=adapters[str(i)])
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=adapters[str(i)])
    model.eval()
    backend = HFBackend(model, tok)
    outcomes: dict[str, dict | Exception] = {}
    jobs: dict[str, Evaluand] = {}
    for i, t in enumerate(members):
        key = str(i)
        try:
            baseline = make_baseline(t.method, t.method_options or {}) if t.method else None
            own_tok = load_tokenizer(
                resolve_name(spec.name_or_path), spec
            )  # each thread its own: tokenizers are not thread-safe
            jobs[key] = Evaluand(
                target_info(t.target), own_tok, Path(t.output_dir), t.settings, baseline, prompt_format
            )
            outcomes[key] = {}
        except Exception as err:  # noqa: BLE001
            outcomes[key] = err
    for index, task in enumerate(task_objs):
        live = [k for k in jobs if not isinstance(outcomes[k], Exception)]

        def score(key: str, gen, task=task, index=index) -> None:
            try:
                outcomes[key][task.name] = evaluate_task(
                    jobs[key], task, gen, ks, pool, limit, limits, index, len(task_objs)
                )
            except Exception as err:  # noqa: BLE001 - this member stops; the others go on
                outcomes[key] = err

        if not task.generates:  # scores the model itself: one member at a time, its adapter active
            for key in live:
                with _active(model, adapters.get(key, BASE)):
                    score(key, backend)
            continue
        together = Together(backend, {k: adapters.get(k, BASE) for k in live}, mixed=bool(adapters))

        def member(key: str, together=together, score=score) -> None:
            try:
                score(key, together.member(key))
            finally:
                together.leave(key)

        threads = [threading.Thread(target=member, args=(k,), name=f"codepeft-eval-{k}") for k in live]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return [outcomes[str(i)] for i in range(len(members))]


@contextlib.contextmanager
def _active(model, adapter: str):
    """The model as one member sees it: its adapter active, or (BASE) no adapter at all."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield
    elif adapter == BASE:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter)
        yield


class _OneMapAtATime:
    """The sandbox pool shared by the members' threads, one batch of programs at a time: programs
    run with wall-clock limits, and several members' batches at once would overload the workers."""

    def __init__(self, pool: SandboxPool):
        self.pool, self.lock = pool, threading.Lock()
        self.isolation, self.workers = pool.isolation, pool.workers

    def map(self, jobs):
        with self.lock:
            return self.pool.map(jobs)
