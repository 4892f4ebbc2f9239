"""Every analysis module's reading for each unlearning operator's edit on the toy world.

M0 is the toy world's original, Mr its retrain oracle, M1 the operator's edit with default config
(seed 0). Prints one row per operator: behaviour after the edit and each module's reading.

    .venv/bin/python bench/readings.py [--operators ga,npo,rmu,prune,steer]

Writes each edit's accuracies and each module's reading, reason and scores to
`bench/results/readings.json`, one entry per `--operators`.
"""

from __future__ import annotations

import argparse
import time

SHORT = {"removal-consistent": "removal", "suppression-signature": "SUPPRESSION",
         "inconclusive": "inconcl."}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--operators", default="ga,npo,rmu,prune,steer")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from probes import run_battery
    from workbench.behavior import accuracy_by_split
    from workbench.operators import get_operator, make_config
    from workbench.toyworld import build_toyworld

    world = build_toyworld(progress=False)
    m0, mr, facts = world.original(device="cpu"), world.oracle(device="cpu"), world.facts()
    rows = []
    for name in args.operators.split(","):
        t0 = time.perf_counter()
        edit = get_operator(name).apply(m0, facts.forget, facts.retain, make_config(name, seed=0))
        acc = accuracy_by_split(edit.subject, facts, generate=False)
        findings = run_battery(m0, edit.subject, facts, oracle=mr, progress=False)
        rows.append((name, acc, findings, time.perf_counter() - t0))
        print(f"{name}: done in {rows[-1][3]:.0f} s", flush=True)
    modules = [f.name for f in rows[0][2]]
    t = Table(title="Toy world: each module's reading of each operator's edit (default configs)")
    for col in ["operator", "forget/retain/holdout acc", *modules, "s"]:
        t.add_column(col)
    for name, acc, findings, sec in rows:
        a = "/".join(f"{acc[s]['accuracy']:.0%}" for s in ("forget", "retain", "holdout"))
        t.add_row(name, a, *(SHORT[f.reading] for f in findings), f"{sec:.0f}")
    Console(width=220).print(t)
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("readings", vars(args), {
        "world": world.stats["config_hash"], "facts": facts.name,
        "operators": {name: {"seconds": round(sec, 1), "accuracy": acc,
                             "findings": {f.name: {"reading": f.reading, "reason": f.reason,
                                                   "scores": f.scores,
                                                   "seconds": round(f.seconds, 2)}
                                          for f in findings}}
                      for name, acc, findings, sec in rows}})
    print(f"written to {relative(path)}")


if __name__ == "__main__":
    main()
