"""What `workbench.controls.noise_edit` (the damaged-model control) does to the toy world's
original at each noise scale: forget / retain / holdout accuracy per scale and noise seed.

    python bench/noise_edit.py                          # scales 0.5 1 2 3, seed 0
    python bench/noise_edit.py --scales 1 2 --seeds 0 1 2

Prints one row per scale and seed; writes them to `bench/results/noise_edit.json`, one entry per
set of options. Seconds on a CPU (teacher-forced scoring by default).
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--generate", action="store_true",
                    help="score by greedy generation instead of teacher-forced")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from workbench.behavior import accuracy_by_split
    from workbench.controls import noise_edit
    from workbench.toyworld import build_toyworld

    world = build_toyworld(progress=False)
    m0, facts = world.original(device="cpu"), world.facts()
    splits = ("forget", "retain", "holdout")
    before = accuracy_by_split(m0, facts, generate=args.generate)
    t = Table(title=f"{m0.name}: accuracy after noise_edit (scale x each tensor's std)")
    for col in ("scale", "seed", *splits):
        t.add_column(col, justify="right")
    t.add_row("0 (original)", "-", *(f"{before[s]['accuracy']:.0%}" for s in splits))
    rows = []
    for scale in args.scales:
        for seed in args.seeds:
            acc = accuracy_by_split(noise_edit(m0, scale, seed), facts, generate=args.generate)
            rows.append({"scale": scale, "seed": seed, "accuracy": acc})
            t.add_row(f"{scale:g}", str(seed), *(f"{acc[s]['accuracy']:.0%}" for s in splits))
    con = Console(width=120)
    con.print(t)
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("noise_edit", vars(args), {
        "subject": m0.name, "world": world.stats["config_hash"], "facts": facts.name,
        "original": before, "noised": rows})
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
