"""`workbench models`: what can be loaded offline, and what is cached."""

from __future__ import annotations

from rich.table import Table

from apps.cli.common import handles_errors, out


@handles_errors(quiet=False)
def models() -> None:
    """List the models that can be loaded offline, and what is cached."""
    from workbench.models import cache_root, list_models

    t = Table(title=f"Models (cache: {cache_root()})")
    for col in ("spec", "kind", "cached", "location"):
        t.add_column(col)
    for row in list_models():
        t.add_row(row["spec"], row["kind"], row["cached"], row["location"])
    out.print(t)
    out.print("Also accepted: any local HF checkpoint directory, a .gguf file, a saved edit "
              "directory, or a hub id (needs network or a filled HF cache).")
