"""`workbench unlearn`: apply operators, evaluate, save (pipeline: `workbench.unlearn`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, err, handles_errors, out


@handles_errors
def unlearn(
    operator: Annotated[str, typer.Option(
        "--operator", "-o", help="operator name (`workbench operators`)")],
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the edit into")],
    model: Annotated[str, typer.Option(
        help="model spec, or a saved edit directory")] = "smollm2-135m",
    facts: Annotated[str, typer.Option(
        help="fact file or built-in name (uses forget/retain)")] = "smollm2",
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="config key=value (NAME.key=value for --then)")] = None,
    then: Annotated[list[str] | None, typer.Option(
        "--then", help="operators applied afterwards, in order")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for every operator in the chain")] = None,
    device: Device = None,
    generate: Annotated[bool, typer.Option(
        help="score by greedy generation (else teacher-forced)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print edit.json to stdout")] = False,
) -> None:
    """Apply an unlearning operator (then each --then operator): sequential unlearning, saved."""
    from workbench.unlearn import run_unlearn

    doc = run_unlearn(model, facts, [operator, *(then or [])], out_dir, sets or [], seed=seed,
                      device=device, generate=generate,
                      on_operator=lambda op, subject: err.print(
                          f"[bold]{op.name}[/] ({op.family}, {op.kind}) on {subject.name}"))
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    chain = " -> ".join(c["operator"] for c in doc["chain"])
    t = Table(title=f"{chain}  (saved to {out_dir}, {doc['timings']['chain_total_s']:.1f} s)")
    for col in ("split", "n", "accuracy before", "after", "log-prob before", "after"):
        t.add_column(col, justify="right")
    for split, b in doc["before"].items():
        a = doc["after"][split]
        t.add_row(split, str(b["n"]), f"{b['accuracy']:.1%}", f"{a['accuracy']:.1%}",
                  f"{b['logprob']:.3f}", f"{a['logprob']:.3f}")
    out.print(t)
