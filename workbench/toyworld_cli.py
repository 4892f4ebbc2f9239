"""`workbench toyworld ...`: build the synthetic world, its model and its retrain oracle."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

toyworld_app = typer.Typer(no_args_is_help=True,
                           help="Synthetic world of fictitious people with a retrain oracle.")
_out = Console()


def world_table(stats: dict) -> Table:
    """Accuracy per split for the original model and the oracle, with chance rates."""
    acc = stats["accuracy"]
    t = Table(title=f"Toy world (seed {stats['seed']}, config {stats['config_hash']})")
    for col in ("split", "people", "facts", "original", "paraphrases", "oracle", "paraphrases"):
        t.add_column(col, justify="right")
    for split, n_facts in stats["n_facts"].items():
        o, r = acc["original"].get(split, {}), acc["oracle"].get(split, {})
        t.add_row(split, str(stats["n_people"][split]), str(n_facts),
                  *(f"{row.get(k, float('nan')):.1%}" for row in (o, r)
                    for k in ("accuracy", "paraphrase_accuracy")))
    chance = stats["chance"]
    wall, cpu = stats["train_seconds"], stats.get("train_cpu_seconds", {})
    timing = ", ".join(f"{m} {wall[m]:.1f} s" + (f" ({cpu[m]:.1f} s CPU)" if m in cpu else "")
                       for m in ("original", "oracle"))
    t.caption = ("accuracy: greedy answer to the canonical prompt; paraphrases: teacher-forced "
                 "on the other phrasings\nchance (1 / values per attribute): "
                 + ", ".join(f"{k} {v:.1%}" for k, v in chance.items())
                 + f"\ntraining: {timing}; whole build {stats['build_seconds']:.1f} s")
    return t


@toyworld_app.command("build")
def build_cmd(
    out: Path | None = typer.Option(None, "--out", help="output directory (default: the cache)"),
    seed: int = typer.Option(0, help="world and training seed"),
    force: bool = typer.Option(False, "--force", help="rebuild even if a build exists"),
) -> None:
    """Generate the facts, train the original model and the retrain oracle, print accuracies."""
    from workbench.cli import _quiet_hf
    from workbench.toyworld import build_toyworld

    _quiet_hf()
    world = build_toyworld(out, seed=seed, force=force, progress=True)
    _out.print(world_table(world.stats))
    _out.print(f"written to {world.root}")


def register(app: typer.Typer) -> None:
    app.add_typer(toyworld_app, name="toyworld")
