"""`workbench operators` (the registry as a table) and `workbench unlearn` (apply, evaluate, save)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.errors import WorkbenchError

console = Console(stderr=True)
out = Console()


def operators_cmd(
    name: str | None = typer.Argument(None, help="show this operator's config fields in full"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the unlearning operators: family, kind, what they touch, config fields and defaults;
    with NAME, each config field's type, choices, default and doc."""
    rows = operator_rows()
    if name is not None:
        from workbench.cli import fail

        known = [r["name"] for r in rows]
        if name not in known:
            raise fail(WorkbenchError(f"unknown operator {name!r}; known: {known}"))
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


def operator_rows() -> list[dict[str, Any]]:
    """Per operator: name, family, kind, touches, `config` as (field, type, default) and
    `fields` as each field's full `FieldSpec` (type, choices, default, doc, bounds)."""
    from dataclasses import asdict

    from workbench.operators import OPERATORS, config_fields

    rows = []
    for n, c in sorted(OPERATORS.items()):
        specs = config_fields(n)
        rows.append({"name": n, "family": c.family, "kind": c.kind, "touches": c.touches,
                     "config": [(s.name, s.type, s.default) for s in specs],
                     "fields": [asdict(s) for s in specs]})
    return rows


def split_overrides(names: list[str], sets: list[str]) -> list[list[str]]:
    """Route `--set key=value` to the first operator and `--set NAME.key=value` to each NAME."""
    per: list[list[str]] = [[] for _ in names]
    for item in sets:
        key = item.split("=", 1)[0]
        if "." in key and key.split(".", 1)[0] in names:
            op, rest = item.split(".", 1)
            for i, n in enumerate(names):
                if n == op:
                    per[i].append(rest)
        else:
            per[0].append(item)
    return per


def _check_out(out_dir: Path, model: str, facts: str) -> None:
    target = out_dir.expanduser().resolve()
    for src in (model, facts):
        p = Path(src).expanduser()
        if p.exists() and (p.resolve() == target or p.resolve() in target.parents):
            raise WorkbenchError(f"refusing to write the edit into the input {src!r}; "
                                 f"choose another --out")


def run_unlearn(model: str, facts: str, names: list[str], out_dir: Path, sets: list[str],
                seed: int | None = None, device: str | None = None,
                generate: bool = True) -> dict[str, Any]:
    """Load, check every input up front, apply the chain of operators, evaluate, save."""
    from workbench.behavior import accuracy_by_split
    from workbench.facts import load_facts
    from workbench.models import load_subject
    from workbench.operators import get_operator, make_config
    from workbench.operators.training import check_layers

    _check_out(out_dir, model, facts)
    fs = load_facts(facts)
    forget, retain = fs.forget, fs.retain
    if len(forget) == 0:
        raise WorkbenchError(f"{facts}: the forget split is empty; nothing to unlearn")
    ops = [get_operator(n) for n in names]
    configs = [make_config(n, s, seed=seed) for n, s in zip(names, split_overrides(names, sets), strict=True)]
    subject = load_subject(model, device=device)
    for cfg in configs:
        if getattr(cfg, "layers", None) is not None:
            check_layers(subject, cfg.layers)
    t0 = time.perf_counter()
    before = accuracy_by_split(subject, fs, generate=generate)
    eval_s = time.perf_counter() - t0
    current, edit = subject, None
    for op, cfg in zip(ops, configs, strict=True):
        console.print(f"[bold]{op.name}[/] ({op.family}, {op.kind}) on {current.name}")
        edit = op.apply(current, forget, retain, cfg)
        current = edit.subject
    t0 = time.perf_counter()
    after = accuracy_by_split(current, fs, generate=generate)
    eval_s += time.perf_counter() - t0
    edit.timings["eval_s"] = round(eval_s, 3)
    edit.timings["chain_total_s"] = round(sum(c["timings"].get("total_s", 0.0)
                                              for c in edit.chain), 3)
    edit.metrics.update({"before": before, "after": after, "facts": str(facts),
                         "model": model})
    edit.save(out_dir)
    return json.loads((out_dir / "edit.json").read_text())


def unlearn_cmd(
    operator: str = typer.Option(..., "--operator", "-o", help="operator name (`workbench operators`)"),
    out_dir: Path = typer.Option(..., "--out", help="directory to write the edit into"),
    model: str = typer.Option("smollm2-135m", help="model spec, or a saved edit directory"),
    facts: str = typer.Option("smollm2", help="fact file or built-in name (uses forget/retain)"),
    sets: list[str] = typer.Option([], "--set", help="config key=value (NAME.key=value for --then)"),
    then: list[str] = typer.Option([], "--then", help="operators applied afterwards, in order"),
    seed: int | None = typer.Option(None, help="seed for every operator in the chain"),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: GPU if present)"),
    generate: bool = typer.Option(True, help="score by greedy generation (else teacher-forced)"),
    as_json: bool = typer.Option(False, "--json", help="print edit.json to stdout"),
) -> None:
    """Apply an unlearning operator (then each --then operator): sequential unlearning, saved."""
    from workbench.cli import _quiet_hf, fail

    _quiet_hf()
    try:
        doc = run_unlearn(model, facts, [operator, *then], out_dir, list(sets), seed, device,
                          generate)
    except WorkbenchError as e:
        raise fail(e) from None
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


def register(app: typer.Typer) -> None:
    app.command("operators")(operators_cmd)
    app.command("unlearn")(unlearn_cmd)
