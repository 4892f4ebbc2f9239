"""`workbench audit`: any original / edited checkpoint pair to a verdict and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, handles_errors, out


@handles_errors
def audit(
    facts: Annotated[str, typer.Option(help="fact file or built-in name")],
    out_dir: Annotated[Path, typer.Option("--out", help="run directory (resumes if present)")],
    original: Annotated[str | None, typer.Option(help="model spec of the original M0")] = None,
    edited: Annotated[str | None, typer.Option(
        help="model spec (or saved edit) of the edited M1")] = None,
    model: Annotated[str | None, typer.Option(
        help="with --operator: the model to unlearn from, then audit")] = None,
    operator: Annotated[str | None, typer.Option(
        help="unlearn the forget split from --model with this operator, then audit the edit")
    ] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="with --operator: config key=value (repeatable)")] = None,
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
    """Audit an edit (--original and --edited), or unlearn then audit (--model and --operator):
    run the battery, decide the verdict, write the run directory and report."""
    from apps.audit import audit as run
    from apps.audit import unlearn_and_audit
    from workbench.errors import WorkbenchError

    if operator is not None:
        if edited is not None or original is not None:
            raise WorkbenchError("--operator audits its own edit of --model: drop --original "
                                 "and --edited")
        if model is None:
            raise WorkbenchError("--operator needs --model, the model to unlearn from")
        if dtype != "auto":
            raise WorkbenchError("--dtype applies to --original/--edited audits; with "
                                 "--operator the edit is trained and audited in float32")
        result = unlearn_and_audit(model, operator, facts, out_dir, sets or [], oracle=oracle,
                                   tier=tier, modules=module, seed=seed,
                                   calibration=calibration, device=device)
    else:
        if model is not None or sets:
            raise WorkbenchError("--model and --set go with --operator (unlearn, then audit)")
        if original is None or edited is None:
            raise WorkbenchError("give --original and --edited (or --model and --operator)")
        result = run(original, edited, facts, out_dir, oracle=oracle, tier=tier,
                     modules=module, seed=seed, calibration=calibration, device=device,
                     dtype=dtype)
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
    for u in v.unweighed:
        out.print(f"[yellow]against it, not counted[/]: {u}")
    out.print(f"report: {result.out / 'report.html'}")
