"""`workbench operators [NAME]`: the operator registry as a table (or JSON); with NAME, each config
field's type, choices, default and doc (the same `FieldSpec`s the app's forms read)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from apps.cli.common import handles_errors, out
from workbench.errors import WorkbenchError


def operator_rows() -> list[dict[str, Any]]:
    """Per operator: name, family, kind, touches, `config` as (field, type, default) and
    `fields` as each field's full `FieldSpec` (type, choices, default, doc, bounds)."""
    from workbench.operators import OPERATORS, config_fields

    rows = []
    for n, c in sorted(OPERATORS.items()):
        specs = config_fields(n)
        rows.append({"name": n, "family": c.family, "kind": c.kind, "touches": c.touches,
                     "config": [(s.name, s.type, s.default) for s in specs],
                     "fields": [asdict(s) for s in specs]})
    return rows


def field_lines(row: dict[str, Any]) -> list[str]:
    """One operator's config fields as text: `name: type = default  (choices or bounds)`, then
    the field's doc on the next line."""
    lines = [f"{row['name']} ({row['family']}, {row['kind']}): {row['touches']}",
             "set fields with --set key=value", ""]
    for f in row["fields"]:
        allowed = (" | ".join(map(str, f["choices"])) if f["choices"]
                   else ", ".join(f"{op} {v}" for op, v in f["bounds"]))
        lines.append(f"  {f['name']}: {f['type']} = {f['default']!r}"
                     + (f"  ({allowed})" if allowed else ""))
        lines.append(f"      {f['doc']}")
    return lines


@handles_errors(quiet=False)
def operators(
    name: Annotated[str | None, typer.Argument(help="show this operator's config fields in full")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the unlearning operators: family, kind, what they touch, config fields and defaults;
    with NAME, each config field's type, choices, default and doc."""
    rows = operator_rows()
    if name is not None:
        known = [r["name"] for r in rows]
        if name not in known:
            raise WorkbenchError(f"unknown operator {name!r}; known: {known}")
        rows = [rows[known.index(name)]]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if name is not None:
        for line in field_lines(rows[0]):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    t = Table(title="Unlearning operators (set fields with --set key=value)")
    for col in ("name", "family", "kind"):
        t.add_column(col, no_wrap=True)
    t.add_column("touches", ratio=1)
    t.add_column("config: key = default", ratio=1, overflow="fold")
    for r in rows:
        cfg = "\n".join(f"{f['name']} = {f['default']!r}"
                        + (f"  ({' | '.join(map(str, f['choices']))})" if f["choices"] else "")
                        for f in r["fields"])
        t.add_row(r["name"], r["family"], r["kind"], r["touches"], escape(cfg))
    out.print(t)
    out.print("`workbench operators NAME` describes each field of NAME's config")
