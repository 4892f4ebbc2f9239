"""`workbench` command line (typer). Every command has --help; bad input exits 2 with a message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.errors import WorkbenchError, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Did an unlearning edit remove the knowledge, or only suppress it?")
facts_app = typer.Typer(no_args_is_help=True, help="Inspect and validate fact files.")
app.add_typer(facts_app, name="facts")
console = Console(stderr=True)
out = Console()


def _quiet_hf() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def fail(e: Exception) -> typer.Exit:
    """Print `e` as one line (never wrapped, brackets shown as is); exit code 2."""
    console.print(f"[bold red]error:[/] {escape(one_line(e, limit=1000))}", soft_wrap=True)
    return typer.Exit(2)


@app.command("models")
def models_cmd() -> None:
    """List the models that can be loaded offline, and what is cached."""
    from workbench.models import cache_root, list_models

    t = Table(title=f"Models (cache: {cache_root()})")
    for col in ("spec", "kind", "cached", "location"):
        t.add_column(col)
    for row in list_models():
        t.add_row(row["spec"], row["kind"], row["cached"], row["location"])
    out.print(t)
    out.print("Also accepted: any local HF checkpoint directory, a .gguf file, a saved edit "
              "directory, or a hub id (needs network or a filled HF cache).")


@facts_app.command("validate")
def facts_validate(path: Path) -> None:
    """Validate a JSONL fact file; exits non-zero and names the line and field on bad input."""
    from workbench.facts import FactSet

    try:
        fs = FactSet.load(path)
    except WorkbenchError as e:
        raise fail(e) from None
    counts = {s: len(fs.split(s)) for s in fs.splits()}
    out.print(f"[green]ok[/] {path}: {len(fs)} facts {counts}")


@facts_app.command("show")
def facts_show(spec: str = typer.Argument("smollm2", help="file or built-in name")) -> None:
    """Print a fact set as a table."""
    from workbench.facts import load_facts

    try:
        fs = load_facts(spec)
    except WorkbenchError as e:
        raise fail(e) from None
    t = Table(title=f"{fs.name}: {len(fs)} facts")
    for col in ("id", "split", "relation", "prompt", "answer"):
        t.add_column(col)
    for f in fs:
        t.add_row(f.id, f.split, f.relation or "", f.prompt, f.answer)
    out.print(t)


@app.command("eval")
def eval_cmd(
    model: str = typer.Option("smollm2-135m", help="model spec"),
    facts: str = typer.Option("smollm2", help="fact file or built-in name"),
    as_json: bool = typer.Option(False, "--json", help="print JSON keyed by split"),
    paraphrases: bool = typer.Option(False, help="score the paraphrases instead of the prompts"),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: GPU if present)"),
) -> None:
    """Accuracy and mean answer log-prob per split."""
    _quiet_hf()
    from workbench.behavior import accuracy_by_split
    from workbench.facts import load_facts
    from workbench.models import load_subject

    try:
        fs = load_facts(facts)
        subject = load_subject(model, device=device)
        summary = accuracy_by_split(subject, fs, use_paraphrases=paraphrases)
    except WorkbenchError as e:
        raise fail(e) from None
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    t = Table(title=f"{subject.name} on {fs.name}")
    for col in ("split", "n", "accuracy", "mean answer log-prob"):
        t.add_column(col, justify="right")
    for split, row in summary.items():
        t.add_row(split, str(row["n"]), f"{row['accuracy']:.1%}", f"{row['logprob']:.3f}")
    out.print(t)


def _register_plugins() -> None:
    """Command groups that live beside their own code (each module defines `register(app)`)."""
    import importlib

    for mod in ("workbench.cli_demo", "workbench.toyworld_cli", "workbench.operators.cli",
                "saes.cli", "probes.cli"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        module.register(app)


_register_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
