"""`workbench demo`: the main job, audits on the bundled model (`apps.audit_demo`); and
`workbench answers`: the bundled model's answers and where they form (`probes.demo.run_demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Facts, Model, handles_errors, out


@handles_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="seed of the edits and the audits")] = 0,
    device: Annotated[str | None, typer.Option(
        help="cpu, cuda, ... (default: GPU if any)")] = None,
) -> None:
    """The main job: unlearn, audit against the oracle, and print the verdicts (offline)."""
    from apps.audit_demo import FULL_ADDS, run_audit_demo

    rows = run_audit_demo(out_dir, seed=seed, device=device, log=out.print)
    t = Table(title="audits (quick tier)")
    for col in ("edit", "meant as", "verdict", "removal score", "confidence"):
        t.add_column(col)
    for r in rows:
        v = r.run.verdict
        t.add_row(r.name, r.truth, v.verdict, f"{v.removal_score:.2f}", f"{v.confidence:.2f}")
    out.print(t)
    for r in rows:
        out.print(f"{r.name}: {r.run.out / 'report.html'}")
    for r in rows:
        for u in r.run.verdict.unavailable:
            if u.startswith("oracle:"):
                out.print(f"{r.name}: {u}")
    out.print(FULL_ADDS)


@handles_errors
def answers(
    model: Model = "smollm2-135m",
    facts: Facts = "smollm2",
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path(
        "runs/answers"),
    device: Annotated[str | None, typer.Option(
        help="cpu, cuda, ... (default: GPU if any)")] = None,
) -> None:
    """The bundled model's answers on the built-in facts, and the layer where each forms."""
    from probes.demo import run_demo

    run = run_demo(model, facts, out_dir, device)
    doc = run.doc
    table = Table(title=f"{doc['model']}: answers on {doc['facts']} ({len(run.results)} facts)")
    for col in ("split", "prompt", "answer", "model says", "ok", "log p", "top-10 from",
                "top-1 from"):
        table.add_column(col, overflow="fold")
    for r, a, b in zip(run.results, run.top10_from, run.top1_from, strict=True):
        table.add_row(r.split, r.prompt, r.answer.strip(), r.generated.strip()[:24],
                      "[green]yes[/]" if r.correct else "[red]no[/]", f"{r.logprob:.2f}",
                      "-" if a < 0 else f"L{a}", "-" if b < 0 else f"L{b}")
    out.print(table)
    out.print(", ".join(f"{s}: {v['accuracy']:.0%} of {v['n']}" for s, v in doc["splits"].items()))
    out.print(f"Median layer where the answer becomes top-1: "
              f"{doc['answer_forms_at']['median_top1_layer']} of {doc['n_layers']}; wrote "
              f"{run.summary_path} and {run.figure_path} in {doc['seconds']['total']} s")
