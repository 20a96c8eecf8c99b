"""Running a study: expand the grid, register the cells, run every cell not yet done on the
chosen backend, and record each result as it arrives. Re-running skips finished cells, retries
failed and interrupted ones (training resumes from its checkpoint) and never duplicates a result.

Backends: `local` runs each cell in a fresh worker process (so one cell's memory never counts
in the next cell's peak, and a crash in a cell cannot take the study down), `workers` at a time;
`ray` sends cells to a Ray cluster (or a local instance) as tasks with CPU/GPU requests. Either
way, only this process writes the store.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import yaml

from codepeft.errors import CodepeftError
from codepeft.execution.sandbox import hide_from_programs
from codepeft.study.cells import expand, run_cell
from codepeft.study.config import StudyConfig
from codepeft.study.store import Store

STORE_NAME = "results.sqlite"


def store_path(directory: str | Path) -> Path:
    return Path(directory) / STORE_NAME


def open_store(directory: str | Path, must_exist: bool = True) -> Store:
    path = store_path(directory)
    if must_exist and not path.is_file():
        raise CodepeftError(
            f"no study results in {directory} (missing {STORE_NAME}); run `codepeft study CONFIG` first"
        )
    return Store(path)


def prepare(config: StudyConfig) -> tuple[Store, list[dict]]:
    """Create the study directory and store, register the grid; returns the cells."""
    directory = config.directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "study.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    store = open_store(directory, must_exist=False)
    cells = expand(config)
    store.add_cells(cells)
    return store, cells


def run_study(config: StudyConfig, on_event: Callable[[str, dict], None] | None = None) -> dict[str, int]:
    """Run every cell not done yet; returns the count of cells per status afterwards."""
    hide_from_programs()  # this process holds the user's environment too; its workers run programs
    store, cells = prepare(config)
    if any(m.name_or_path == "default" for m in config.models):
        from codepeft.models.bootstrap import ensure_default_model

        ensure_default_model()  # built once here, not by several workers at the same time
    notify = on_event or (lambda event, cell: None)
    due = [c for c in cells if store.status(c["cell_id"]) != "done"]
    for cell in cells:
        if cell not in due:
            notify("skipped", cell)
    try:
        backend = _BACKENDS[config.backend.kind]
        for cell, result in backend(
            config, due, lambda c: (store.mark_running(c["cell_id"], c["spec"]["cell_dir"]), notify("started", c))
        ):
            if "error" in result:
                store.mark_failed(cell["cell_id"], result["error"])
                notify("failed", {**cell, "error": result["error"]})
            else:
                store.record(cell["cell_id"], result)
                notify("done", cell)
        counts: dict[str, int] = {}
        for c in store.cells():
            if c["cell_id"] in {x["cell_id"] for x in cells}:
                counts[c["status"]] = counts.get(c["status"], 0) + 1
        return counts
    finally:
        store.close()


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _local(config: StudyConfig, cells: list[dict], start) -> Iterator[tuple[dict, dict]]:
    workers = config.backend.workers
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or CUDA state
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        max_tasks_per_child=1,
        initializer=_init_worker,
        initargs=(_threads_per_worker(workers),),
    ) as pool:
        queue = list(cells)
        running = {}
        while queue or running:
            while queue and len(running) < workers:
                cell = queue.pop(0)
                start(cell)
                running[pool.submit(run_cell, cell["spec"], True)] = cell
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = running.pop(future)
                try:
                    result = future.result()
                except Exception as err:  # the worker process died (killed, out of memory)
                    result = {"error": f"worker process failed: {type(err).__name__}: {err}"}
                yield cell, result


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
            pending[remote.remote(cell["spec"], True)] = cell
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
