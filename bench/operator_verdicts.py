"""Reading the literature back: the verdict on every operator's default edit, with the recovery
attacks' figures beside the oracle's, on the toy world and on the people world (issue #15 part 5).

    python bench/operator_verdicts.py                       # toy world seed 0, every operator
    python bench/operator_verdicts.py --seed 1 --operators ga,npo,rmu
    python bench/operator_verdicts.py --world people        # SmolLM2 taught fictitious people

Each operator runs with its defaults (entities and relations inferred as `workbench unlearn`
does), the battery reads the edit against the retrain oracle, and the shipped calibration
decides. The toy world runs the full battery; the people world the audit's quick tier by default
(the cheap modules and quantization: the training operators alone take about 50 minutes there
on 2 cores; `--tier full` adds the other attacks). Writes
`bench/results/operator_verdicts.json`, one entry per set of options, after every operator (an
interrupted run keeps what it finished); `--edits DIR` keeps each edit in DIR/<operator> for
later audits, and a later run with the same world, operator and settings reuses it
(`workbench.edits.cached_edit`).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

RECOVERIES = {"relearning": "recovery_over_floor", "quantization": "recovery",
              "directional_ablation": "recovery", "in_context_recovery": "recovery",
              "activation_patching": "uds"}
FLOORS = {"quantization": "floor", "directional_ablation": "floor_recovery",
          "in_context_recovery": "floor_recovery"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=["toy", "people"], default="toy")
    ap.add_argument("--seed", type=int, default=0, help="toy-world seed (and the edits' seed)")
    ap.add_argument("--operators", default="all")
    ap.add_argument("--tier", choices=["quick", "full"], default=None,
                    help="the audit tier's modules (default: full on toy, quick on people)")
    ap.add_argument("--edits", default=None,
                    help="keep each edit in DIR/<operator>; reused by a later run with the same "
                         "world, operator and settings")
    args = ap.parse_args()
    from pathlib import Path

    from results_io import relative, write_results  # bench/results_io.py, next to this script
    from rich.console import Console
    from rich.table import Table

    from probes import run_battery
    from probes.audit import tier_modules
    from probes.verdict import decide
    from workbench.behavior import accuracy_by_split
    from workbench.edits import cached_edit
    from workbench.entities import with_entities
    from workbench.errors import WorkbenchError
    from workbench.model_sharing import share_unchanged
    from workbench.operators import OPERATORS, get_operator, make_config

    tier = args.tier or ("full" if args.world == "toy" else "quick")
    modules = tier_modules(tier)
    if args.world == "toy":
        from workbench.toyworld import build_toyworld

        world = build_toyworld(seed=args.seed, progress=True)
    else:
        from workbench.pretrained_world import build_pretrained_world

        world = build_pretrained_world(progress=True)
    facts, _ = with_entities(world.facts())
    m0 = world.original(device="cpu")
    oracle = world.oracle(device="cpu", over=m0)
    names = OPERATORS.names() if args.operators == "all" else args.operators.split(",")
    rows = []

    def save() -> Path:
        return write_results("operator_verdicts", vars(args), {
            "world": args.world, "world_hash": world.stats["config_hash"],
            "world_seed": args.seed, "tier": tier, "modules": modules, "rows": rows})

    for name in names:
        op = get_operator(name)
        config = make_config(name, {}, seed=args.seed)
        t0 = time.perf_counter()
        make = partial(op.apply, m0, facts.forget, facts.retain, config)
        try:
            if args.edits:  # reused when this world, operator and config made it
                key = {"world": world.stats["config_hash"], "operator": name,
                       "config": repr(config)}
                subject = cached_edit(Path(args.edits) / name, key, make, "cpu")
                share_unchanged(m0, subject)
            else:
                subject = make().subject
        except WorkbenchError as e:  # e.g. a prompt longer than the toy model's context
            rows.append({"operator": name, "family": op.family, "error": str(e)})
            print(f"[verdicts] {name}: cannot apply ({e})", flush=True)
            continue
        t_edit = time.perf_counter() - t0
        acc = {s: round(r["accuracy"], 4) for s, r in accuracy_by_split(subject, facts).items()}
        t0 = time.perf_counter()
        findings = {f.name: f for f in run_battery(m0, subject, facts, oracle, modules,
                                                   seed=args.seed, progress=False)}
        v = decide(findings)
        rows.append({"operator": name, "family": op.family, "accuracy": acc,
                     "verdict": v.verdict, "removal_score": round(v.removal_score, 3),
                     "confidence": v.confidence, "summary": v.summary,
                     "would_change": v.would_change,
                     "readings": {n: f.reading for n, f in findings.items()},
                     "recovery": {n: findings[n].scores.get(k) for n, k in RECOVERIES.items()
                                  if n in findings},
                     "floor": {n: findings[n].scores.get(k) for n, k in FLOORS.items()
                               if n in findings},
                     "edit_seconds": round(t_edit, 1),
                     "module_seconds": {n: round(f.seconds, 1) for n, f in findings.items()},
                     "battery_seconds": round(time.perf_counter() - t0, 1)})
        print(f"[verdicts] {name}: {v.verdict} ({v.removal_score:.2f}) after "
              f"{rows[-1]['edit_seconds']:.0f} + {rows[-1]['battery_seconds']:.0f} s", flush=True)
        save()
        del subject
    con = Console(width=160)
    t = Table(title=f"verdicts on the {args.world} world (seed {args.seed}, {tier} tier), "
                    "shipped calibration")
    for col in ("operator", "family", "forget/retain/holdout", "verdict", "score", "conf",
                "RTT over floor", "quant (floor)", "ablation (floor)", "in-context (floor)",
                "UDS"):
        t.add_column(col)

    def pct(x):
        return "-" if x is None or x != x else f"{x:.2f}"

    def vs(rec, fl, n):
        return f"{pct(rec.get(n))} ({pct(fl.get(n))})" if n in rec else "not run"

    for r in rows:
        if "error" in r:
            t.add_row(r["operator"], r["family"], "-", "cannot apply", *[""] * 7)
            continue
        a, rec, fl = r["accuracy"], r["recovery"], r["floor"]
        t.add_row(r["operator"], r["family"], f"{a['forget']:.0%}/{a['retain']:.0%}/"
                  f"{a['holdout']:.0%}", r["verdict"], f"{r['removal_score']:.2f}",
                  f"{r['confidence']:.2f}",
                  pct(rec["relearning"]) if "relearning" in rec else "not run",
                  vs(rec, fl, "quantization"), vs(rec, fl, "directional_ablation"),
                  vs(rec, fl, "in_context_recovery"), pct(rec.get("activation_patching")))
    con.print(t)
    path = save()
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
