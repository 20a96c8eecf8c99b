"""The `codepeft` command line: a thin typer layer over the public functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from codepeft.errors import CodepeftError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
app.add_typer(data_app, name="data")
# Wide tables stay readable when piped (rich assumes 80 columns without a terminal).
console = Console(width=None if sys.stdout.isatty() else 160)


def _fail(err: CodepeftError) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def methods(
    name: str = typer.Argument(None, help="Show one method in detail, with every option it accepts."),
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List every tuning method: family, what is trained, mergeable, quantizable, defaults."""
    from codepeft.methods import all_methods, get_method

    if name:
        try:
            m = get_method(name)
        except CodepeftError as err:
            _fail(err)
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


@app.command()
def bootstrap(
    tokens: int = typer.Option(None, help="Pre-training token budget (default: 786,432)."),
    seed: int = typer.Option(0, help="Seed for data order and initialisation."),
    force: bool = typer.Option(False, help="Rebuild even if cached."),
) -> None:
    """Build (or find in the cache) the offline default model and print its figures."""
    from dataclasses import replace

    from codepeft.models.bootstrap import default_spec, ensure_default_model, read_info

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


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(None, help="Run config (YAML). Optional with --resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set method.name=lora"),
    output_dir: Path = typer.Option(None, "--output-dir", help="Run directory (default runs/<name>-<time>)."),
    resume: Path = typer.Option(None, "--resume", help="Continue the interrupted run in this directory."),
) -> None:
    """Train one model with one method; writes run.json, weights, metrics.jsonl and cost.json."""
    from codepeft.config import load_config, parse_config
    from codepeft.training import train

    try:
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
    except CodepeftError as err:
        _fail(err)
    c = result.cost
    console.print(f"run directory: [bold]{result.run_dir}[/]")
    console.print(
        f"train loss {_fmt(result.final_train_loss)}, eval loss {_fmt(result.final_eval_loss)}; "
        f"{c['trainable_params']:,} trainable of {c['total_params']:,} parameters ({100 * c['trainable_ratio']:.3f}%); "
        f"peak memory {c['peak_memory_gb']} GB ({c['peak_memory_kind']}); {c['wall_time_s']} s; "
        f"{c['tokens_per_s']:,} tokens/s"
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


@data_app.command("stats")
def data_stats(name: str = typer.Argument(..., help="A built-in dataset name or a data file.")) -> None:
    """Number of examples per split and response lengths."""
    from codepeft.config import DatasetSpec
    from codepeft.data import load_examples

    table = Table(title=name)
    for col in ("split", "examples", "mean response chars", "modules"):
        table.add_column(col)
    try:
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
    except CodepeftError as err:
        _fail(err)
    console.print(table)


@data_app.command("list")
def data_list() -> None:
    """Built-in datasets and where they come from."""
    from codepeft.data import BUILTINS

    table = Table(title="built-in datasets")
    for col in ("name", "source", "description"):
        table.add_column(col)
    for d in BUILTINS.values():
        table.add_row(d.name, d.hub_id or "offline (Python standard library)", d.description)
    console.print(table)


def main() -> None:  # pragma: no cover - entry point
    try:
        app()
    except CodepeftError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}")
        sys.exit(2)
