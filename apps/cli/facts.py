"""`workbench facts ...`: inspect and validate fact files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import handles_errors, out

app = typer.Typer(no_args_is_help=True, help="Inspect and validate fact files.")


@app.command("validate")
@handles_errors(quiet=False)
def validate(path: Path) -> None:
    """Validate a JSONL fact file; exits non-zero and names the line and field on bad input."""
    from workbench.facts import FactSet

    fs = FactSet.load(path)
    counts = {s: len(fs.split(s)) for s in fs.splits()}
    out.print(f"[green]ok[/] {path}: {len(fs)} facts {counts}")


@app.command("show")
@handles_errors(quiet=False)
def show(spec: Annotated[str, typer.Argument(help="file or built-in name")] = "smollm2") -> None:
    """Print a fact set as a table."""
    from workbench.facts import load_facts

    fs = load_facts(spec)
    t = Table(title=f"{fs.name}: {len(fs)} facts")
    for col in ("id", "split", "relation", "prompt", "answer"):
        t.add_column(col)
    for f in fs:
        t.add_row(f.id, f.split, f.relation or "", f.prompt, f.answer)
    out.print(t)
