"""`workbench eval`: accuracy and mean answer log-prob per split."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, Facts, Model, handles_errors, out


@handles_errors
def evaluate(
    model: Model = "smollm2-135m",
    facts: Facts = "smollm2",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON keyed by split")] = False,
    paraphrases: Annotated[bool, typer.Option(
        help="score the paraphrases instead of the prompts")] = False,
    device: Device = None,
) -> None:
    """Accuracy and mean answer log-prob per split."""
    from workbench.behavior import accuracy_by_split
    from workbench.facts import load_facts
    from workbench.models import load_subject

    fs = load_facts(facts)
    subject = load_subject(model, device=device)
    summary = accuracy_by_split(subject, fs, use_paraphrases=paraphrases)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    t = Table(title=f"{subject.name} on {fs.name}")
    for col in ("split", "n", "accuracy", "mean answer log-prob"):
        t.add_column(col, justify="right")
    for split, row in summary.items():
        t.add_row(split, str(row["n"]), f"{row['accuracy']:.1%}", f"{row['logprob']:.3f}")
    out.print(t)
