"""Running a study: expand the grid, register the cells, run every cell not yet done on the
chosen backend, and record each result as it arrives. Re-running skips finished cells, retries
failed and interrupted ones (training resumes from its checkpoint) and never duplicates a result.

Backends: `local` runs each cell in a fresh worker process (so one cell's memory never counts
in the next cell's peak, and a crash in a cell cannot take the study down), `workers` at a time;
`ray` sends cells to a Ray cluster (or a local instance) as tasks with CPU/GPU requests. Either
way, only this process writes the store.

Lifetime (codepeft.study.lifetime): one study process per study directory (a lock); workers end
with the study process however it dies; SIGTERM / SIGINT stop the workers, mark the running
cells interrupted (the next run resumes them) and end with `StudyInterrupted`; a second signal
ends at once. A cell's directory has one writer at a time, and a result that cannot be recorded
fails that cell only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from codepeft import progress
from codepeft.errors import CodepeftError
from codepeft.execution.sandbox import hide_from_programs
from codepeft.models.builtin import BUILTIN_MODELS, resolve_name
from codepeft.study import together, worker
from codepeft.study.cells import expand, run_cell
from codepeft.study.config import StudyConfig
from codepeft.study.lifetime import Busy, DirLock, owner, stop_descendants
from codepeft.study.store import Store, open_store


def prepare(config: StudyConfig) -> tuple[Store, list[dict]]:
    """Create the study directory and store, register the grid; returns the cells."""
    directory = config.directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "study.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    store = open_store(directory, must_exist=False)
    cells = expand(config)
    store.add_cells(cells)
    return store, cells


class StudyInterrupted(CodepeftError):
    """SIGTERM or SIGINT stopped the study; its running cells are marked interrupted."""

    def __init__(self, signum: int, cells: int = 0):
        self.signum, self.exit_code = signum, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"study stopped by {name}: workers stopped, {cells} running cell(s) marked interrupted; "
            "run the same command again to resume"
        )


def run_study(config: StudyConfig, on_event: Callable[[str, dict], None] | None = None) -> dict[str, int]:
    """Run every cell not done yet; returns the count of cells per status afterwards."""
    hide_from_programs()  # this process holds the user's environment too; its workers run programs
    config.directory.mkdir(parents=True, exist_ok=True)
    try:
        lock = DirLock(config.directory, "study")
        lock.__enter__()
    except Busy as err:
        raise CodepeftError(f"study {config.name!r} is already running: {err}") from None
    try:
        with _stop_on_signals():
            return _run_locked(config, on_event)
    finally:
        lock.__exit__()


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM / SIGINT: stop the workers and raise StudyInterrupted in the main thread (a second
    signal ends the process at once, also while the interrupted study winds down, so the first
    handler stays in place after an interruption). Installed even where SIGINT was ignored (a study
    started in the background by a shell), so `kill -INT` always stops a study."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def at_once(signum, frame):
        stop_descendants(grace_s=0.5)
        os._exit(128 + signum)

    interrupted = []

    def first(signum, frame):
        interrupted.append(signum)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, at_once)
        stop_descendants()
        raise StudyInterrupted(signum)

    before = {s: signal.signal(s, first) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        if not interrupted:  # else a second signal during the wind-down would meet the default action
            for s, handler in before.items():
                signal.signal(s, handler)


def preflight(config: StudyConfig) -> str:
    """`codepeft doctor CONFIG` before the first cell: refuse when the machine lacks what the study
    needs (a toolchain, bitsandbytes, the isolation asked for); returns the isolation level its
    cells run programs at, given to each explicitly so no worker falls back on its own."""
    from codepeft import doctor
    from codepeft.execution.levels import study_isolation

    checks = doctor.study_checks(config)
    blocking = doctor.blocking(checks)
    if blocking:
        raise CodepeftError(
            "this study needs what the machine lacks, so no cell ran (codepeft doctor CONFIG lists every check):\n  "
            + "\n  ".join(f"{c.name}: {c.found}" for c in blocking)
        )
    if any(t.needs_sandbox for t in doctor.study_tasks(config)):
        return study_isolation(config.eval.isolation).value
    return config.eval.isolation


PROGRESS_EVERY_S = 30.0  # how often running cells' progress is looked at (printed only when it moved)


def _run_locked(config: StudyConfig, on_event) -> dict[str, int]:
    isolation = preflight(config)
    store, cells = prepare(config)
    for cell in cells:
        cell["spec"]["isolation"] = isolation
    for name in {m.name_or_path for m in config.models} & BUILTIN_MODELS.keys():
        resolve_name(name)  # a built-in model is made once here, not by several workers at the same time
    notify = on_event or (lambda event, cell: None)
    due = [c for c in cells if store.status(c["cell_id"]) != "done"]
    for cell in cells:
        if cell not in due:
            notify("skipped", cell)
    clock = _Clock(cells, due, store)
    try:
        backend = _BACKENDS[config.backend.kind]
        started: dict[str, dict] = {}

        def start(c):
            store.mark_running(c["cell_id"], c["spec"]["cell_dir"])
            started[c["cell_id"]] = c
            clock.started(c)
            notify("started", c)

        try:
            with _watch_progress(started, clock, notify):
                for cell, result in backend(config, due, start):
                    started.pop(cell["cell_id"], None)
                    _finish(
                        store, cell, result, lambda e, c: notify(e, {**c, **clock.finished(c)} if e != "skipped" else c)
                    )
        except StudyInterrupted as err:
            for cell_id in started:
                store.mark_interrupted(cell_id)
            raise StudyInterrupted(err.signum, len(started)) from None
        counts: dict[str, int] = {}
        for c in store.cells():
            if c["cell_id"] in {x["cell_id"] for x in cells}:
                counts[c["status"]] = counts.get(c["status"], 0) + 1
        return counts
    finally:
        store.close()


class _Clock:
    """Each cell's time, the study's elapsed time and its time left (codepeft.progress)."""

    def __init__(self, cells: list[dict], due: list[dict], store: Store):
        self.begun = time.monotonic()
        self.due = list(due)
        self.left_to_run = {c["cell_id"] for c in due}
        self.times: list[tuple[dict, float]] = []
        self.since: dict[str, float] = {}
        recorded = {c["cell_id"]: c.get("model_size") for c in store.cells()}
        self.sizes = progress.model_sizes(cells, recorded)

    def started(self, cell: dict) -> None:
        self.since[cell["cell_id"]] = time.monotonic()

    def running_for(self, cell: dict) -> float:
        return time.monotonic() - self.since.get(cell["cell_id"], time.monotonic())

    def finished(self, cell: dict) -> dict:
        seconds = self.running_for(cell)
        self.times.append((cell, seconds))
        self.left_to_run.discard(cell["cell_id"])
        remaining = [c for c in self.due if c["cell_id"] in self.left_to_run]
        return {
            "seconds": seconds,
            "position": f"{len(self.times)}/{len(self.due)}",
            "elapsed": time.monotonic() - self.begun,
            "left": progress.time_left(self.times, remaining, self.sizes),
        }


@contextlib.contextmanager
def _watch_progress(started: dict[str, dict], clock: _Clock, notify):
    """Every PROGRESS_EVERY_S, a `progress` event for each running cell whose phase moved."""
    stop = threading.Event()
    shown: dict[str, str] = {}

    def watch() -> None:
        while not stop.wait(PROGRESS_EVERY_S):
            for cell_id, cell in list(started.items()):
                text = progress.describe(progress.read(cell["spec"]["cell_dir"]))
                if shown.get(cell_id) != text:
                    shown[cell_id] = text
                    notify("progress", {**cell, "progress": text, "seconds": clock.running_for(cell)})

    thread = threading.Thread(target=watch, name="codepeft-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def _finish(store: Store, cell: dict, result: dict, notify) -> None:
    """Record one cell's outcome; a result that cannot be recorded fails that cell, not the study."""
    if "busy" in result:
        store.mark_interrupted(cell["cell_id"])
        notify("skipped", {**cell, "error": result["busy"]})
        return
    if "error" not in result:
        try:
            store.record(cell["cell_id"], result)
            notify("done", cell)
            return
        except Exception as err:  # noqa: BLE001 - any damage in a result: this cell fails, the rest go on
            result = {"error": f"recording the result failed: {type(err).__name__}: {err}"}
    store.mark_failed(cell["cell_id"], result["error"])
    notify("failed", {**cell, "error": result["error"]})


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _local(config: StudyConfig, cells: list[dict], start) -> Iterator[tuple[dict, dict]]:
    """Each cell in a fresh worker process (codepeft.study.worker), `workers` at a time. With
    `eval.together`, cells that can generate in shared batches (codepeft.study.together) train in
    their own workers first and are then evaluated by one worker per group."""
    workers = config.backend.workers
    threads = _threads_per_worker(workers)
    groups = together.groups(cells) if config.eval.together else []
    in_group = {c["cell_id"] for g in groups for c in g}
    queue: list[tuple[str, list[dict]]] = []
    for cell in cells:
        if cell["cell_id"] not in in_group:
            queue.append(("cell", [cell]))
        elif cell["spec"]["trains"]:
            queue.append(("train", [cell]))
    waiting = [list(g) for g in groups]  # each group's cells, until their training is done
    untrained = {c["cell_id"] for g in groups for c in g if c["spec"]["trains"]}
    started_cells: set[str] = set()
    running: dict[subprocess.Popen, tuple[str, list[dict], Path]] = {}

    def release_groups() -> None:
        for group in list(waiting):
            if not any(c["cell_id"] in untrained for c in group):
                waiting.remove(group)
                if group:
                    queue.append(("together", group))

    release_groups()
    try:
        while queue or running or waiting:
            while queue and len(running) < workers:
                kind, job_cells = queue.pop(0)
                for cell in job_cells:
                    if cell["cell_id"] not in started_cells:
                        started_cells.add(cell["cell_id"])
                        start(cell)
                result_path = Path(job_cells[0]["spec"]["cell_dir"]) / f".result-{kind}.json"
                result_path.parent.mkdir(parents=True, exist_ok=True)
                result_path.unlink(missing_ok=True)
                proc = subprocess.Popen(
                    worker.command(os.getpid(), result_path, threads), stdin=subprocess.PIPE, text=True
                )
                proc.stdin.write(json.dumps(together.payload(kind, job_cells, config.directory)))
                proc.stdin.close()
                running[proc] = (kind, job_cells, result_path)
            finished = [p for p in running if p.poll() is not None]
            if not finished:
                time.sleep(0.1)
            for proc in finished:
                kind, job_cells, result_path = running.pop(proc)
                result = worker.read_result(result_path, proc.returncode)
                if kind == "train":
                    cell = job_cells[0]
                    untrained.discard(cell["cell_id"])
                    if "error" in result or "busy" in result:  # its group goes on without it
                        for group in waiting:
                            if cell in group:
                                group.remove(cell)
                        yield cell, result
                    release_groups()
                elif kind == "together":
                    for cell in job_cells:
                        yield cell, result.get("cells", {}).get(cell["cell_id"], result)
                else:
                    yield job_cells[0], result
    finally:
        for proc in running:  # the study is stopping (a signal, an error): its workers go with it
            proc.kill()
            proc.wait()


def _ray(config: StudyConfig, cells: list[dict], start) -> Iterator[tuple[dict, dict]]:
    try:
        import ray
    except ImportError:
        raise CodepeftError("backend.kind=ray needs Ray: pip install 'codepeft[ray]'") from None
    b = config.backend
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=b.address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=b.cpus_per_cell, num_gpus=b.gpus_per_cell, max_calls=1)(run_cell)
        pending = {}
        for cell in cells:
            start(cell)
            pending[remote.remote(cell["spec"], True, owner())] = cell
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as err:  # the task's worker died
                result = {"error": f"ray task failed: {type(err).__name__}: {err}"}
            yield cell, result
    finally:
        if started_here:
            ray.shutdown()


_BACKENDS = {"local": _local, "ray": _ray}
