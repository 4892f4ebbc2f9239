"""`workbench probe`: run analysis modules on an original / edited (/ oracle) subject."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, handles_errors, out


@handles_errors
def probe(
    original: Annotated[str, typer.Option(help="model spec of the original subject M0")],
    edited: Annotated[str, typer.Option(help="model spec of the edited subject M1")],
    facts: Annotated[str, typer.Option(help="fact file or built-in name")],
    oracle: Annotated[str | None, typer.Option(help="model spec of a retrain oracle Mr")] = None,
    module: Annotated[list[str] | None, typer.Option(
        "--module", help="module name (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print findings as JSON")] = False,
    device: Device = None,
) -> None:
    """Run analysis modules; print each finding's reading, reason and scores."""
    from probes import run_battery
    from workbench.facts import load_facts
    from workbench.models import load_subject

    fs = load_facts(facts)
    m0 = load_subject(original, device=device)
    m1 = load_subject(edited, device=device)
    mr = load_subject(oracle, device=device) if oracle else None
    findings = run_battery(m0, m1, fs, oracle=mr, modules=module or None, seed=seed,
                           progress=not as_json)
    if as_json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
        return
    for f in findings:
        t = Table(title=f"{f.name}: {f.reading} ({f.seconds:.1f} s)", caption=f.reason)
        t.add_column("score")
        t.add_column("value", justify="right")
        for k, v in f.scores.items():
            t.add_row(k, f"{v:.4g}")
        out.print(t)
