"""`workbench operators`: the operator registry as a table (or JSON)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from apps.cli.common import handles_errors, out


def operator_rows() -> list[dict[str, Any]]:
    """One row per registered operator: name, family, kind, what it touches, config fields."""
    from workbench.operators import OPERATORS, config_fields

    return [{"name": n, "family": c.family, "kind": c.kind, "touches": c.touches,
             "config": config_fields(n)} for n, c in sorted(OPERATORS.items())]


@handles_errors(quiet=False)
def operators(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the unlearning operators: family, kind, what they touch, config fields and defaults."""
    rows = operator_rows()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    t = Table(title="Unlearning operators (set fields with --set key=value)")
    for col in ("name", "family", "kind"):
        t.add_column(col, no_wrap=True)
    t.add_column("touches", ratio=1)
    t.add_column("config: key = default", ratio=1, overflow="fold")
    for r in rows:
        cfg = "\n".join(f"{k} = {d!r}" for k, _, d in r["config"])
        t.add_row(r["name"], r["family"], r["kind"], r["touches"], cfg)
    out.print(t)
