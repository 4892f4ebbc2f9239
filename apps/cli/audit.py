"""`workbench audit`: any original / edited checkpoint pair to a verdict and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, handles_errors, out


@handles_errors
def audit(
    original: Annotated[str, typer.Option(help="model spec of the original M0")],
    edited: Annotated[str, typer.Option(help="model spec (or saved edit) of the edited M1")],
    facts: Annotated[str, typer.Option(help="fact file or built-in name")],
    out_dir: Annotated[Path, typer.Option("--out", help="run directory (resumes if present)")],
    oracle: Annotated[str | None, typer.Option(help="model spec of a retrain oracle")] = None,
    tier: Annotated[str, typer.Option(help="quick (cheap modules, one attack) or full")] = "quick",
    module: Annotated[list[str] | None, typer.Option(
        "--module", help="run these modules instead of the tier's (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    calibration: Annotated[Path | None, typer.Option(
        help="calibration file (default: the shipped one)")] = None,
    device: Device = None,
    dtype: Annotated[str, typer.Option(
        help="auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16")
    ] = "auto",
) -> None:
    """Audit an edit: run the battery, decide the verdict, write the run directory and report."""
    from apps.audit import audit as run

    result = run(original, edited, facts, out_dir, oracle=oracle, tier=tier, modules=module,
                 seed=seed, calibration=calibration, device=device, dtype=dtype)
    v = result.verdict
    t = Table(title=f"verdict: {v.verdict.upper()}  (removal score {v.removal_score:.2f}, "
                    f"confidence {v.confidence:.2f})", caption=v.summary)
    for col in ("finding", "reading", "figure", "value"):
        t.add_column(col)
    for e in v.evidence:
        t.add_row(e.finding, e.reading, e.figure, f"{e.value:.3g}")
    out.print(t)
    for u in v.unavailable:
        out.print(f"[yellow]unavailable[/]: {u}")
    out.print(f"report: {result.out / 'report.html'}")
