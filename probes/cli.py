"""`workbench probe`: run analysis modules on an original / edited (/ oracle) subject."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("probe")
    def probe_cmd(
        original: str = typer.Option(..., help="model spec of the original subject M0"),
        edited: str = typer.Option(..., help="model spec of the edited subject M1"),
        facts: str = typer.Option(..., help="fact file or built-in name"),
        oracle: str | None = typer.Option(None, help="model spec of a retrain oracle Mr"),
        module: list[str] = typer.Option([], "--module", help="module name (repeatable)"),
        seed: int = typer.Option(0, help="seed"),
        as_json: bool = typer.Option(False, "--json", help="print findings as JSON"),
        device: str | None = typer.Option(None, help="cpu, cuda, ... (default: GPU if present)"),
    ) -> None:
        """Run analysis modules; print each finding's reading, reason and scores."""
        from rich.console import Console
        from rich.table import Table

        from probes import run_battery
        from workbench.cli import _quiet_hf, fail
        from workbench.errors import WorkbenchError
        from workbench.facts import load_facts
        from workbench.models import load_subject

        _quiet_hf()
        try:
            fs = load_facts(facts)
            m0 = load_subject(original, device=device)
            m1 = load_subject(edited, device=device)
            mr = load_subject(oracle, device=device) if oracle else None
            findings = run_battery(m0, m1, fs, oracle=mr, modules=module or None, seed=seed,
                                   progress=not as_json)
        except WorkbenchError as e:
            raise fail(e) from None
        if as_json:
            print(json.dumps([f.to_json() for f in findings], indent=2))
            return
        out = Console()
        for f in findings:
            t = Table(title=f"{f.name}: {f.reading} ({f.seconds:.1f} s)", caption=f.reason)
            t.add_column("score")
            t.add_column("value", justify="right")
            for k, v in f.scores.items():
                t.add_row(k, f"{v:.4g}")
            out.print(t)
