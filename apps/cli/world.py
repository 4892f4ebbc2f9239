"""`workbench world ...`: build a world of fictitious people, its model and its retrain oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import handles_errors, out

app = typer.Typer(no_args_is_help=True,
                  help="Worlds of fictitious people with a retrain oracle (toy or a pretrained base).")


def world_table(stats: dict) -> Table:
    """Accuracy per split for the original model and the oracle, with chance rates."""
    acc = stats["accuracy"]
    kind = f"{stats['base']} fine-tuned" if stats.get("base") else "toy"
    t = Table(title=f"World: {kind} (seed {stats['seed']}, config {stats['config_hash']})")
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
    para = stats.get("paraphrases", "trained")
    general = stats.get("builtin_accuracy")
    t.caption = ("accuracy: greedy answer to the canonical prompt; paraphrases "
                 f"({para}): teacher-forced on the other phrasings\n"
                 + ("built-in real facts answered: " + ", ".join(
                     f"{m} {v:.1%}" for m, v in general.items()) + "\n" if general else "")
                 + "chance (1 / values per attribute): "
                 + ", ".join(f"{k} {v:.1%}" for k, v in chance.items())
                 + f"\ntraining: {timing}; whole build {stats['build_seconds']:.1f} s")
    return t


@app.command("build")
@handles_errors
def build(
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="output directory (default: the cache)")] = None,
    base: Annotated[str, typer.Option(
        help="'toy' (a tiny Llama trained from scratch, seconds) or a model spec to fine-tune "
             "on fictitious people, e.g. smollm2-135m (minutes)")] = "toy",
    seed: Annotated[int, typer.Option(help="world and training seed")] = 0,
    force: Annotated[bool, typer.Option("--force", help="rebuild even if a build exists")] = False,
) -> None:
    """Generate the facts, train the original model and the retrain oracle, print accuracies."""
    from workbench.worlds import build_world

    world = build_world(base, out_dir, seed=seed, force=force, progress=True)
    out.print(world_table(world.stats))
    out.print(f"written to {world.root}")
