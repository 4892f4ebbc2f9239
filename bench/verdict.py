"""The verdict judged on pools it never saw: build the toy world's known-truth pools for several
world seeds, fit a calibration on one, and report the others' confusion matrix, verdict
accuracy, removal-score AUC and every module's faithfulness (the meta-evaluation).

    python bench/verdict.py                              # pools of seeds 0 1 2, fit on 0
    python bench/verdict.py --seeds 0 1 2 3 --fit-on 0 --pools runs/pools
    python bench/verdict.py --people                     # + the real-model world, held out
    python bench/verdict.py --seeds --fit-on --people    # the shipped calibration, people only
    python bench/verdict.py --robustness                 # + robustness on the held-out pools

With `--people`, the real-model world's pool (SmolLM2 taught fictitious people,
`workbench.pools.people_controls`) is built into `--pools/people<seed>` and judged as one more
held-out pool: calibration never saw that world. Its controls are scored with the modules the
calibration weighs (`--people-modules` to change): a module of weight 0 cannot move a verdict.

Pools are built once into `--pools/toy<seed>` (resumable; a rerun only re-reads them). Times:
each pool's build, the calibration fit, and the verdict per edit. Writes
`bench/results/verdict.json`, one entry per set of options.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--fit-on", type=int, nargs="*", default=[0],
                    help="toy seeds to fit on (none: judge with the shipped calibration)")
    ap.add_argument("--pools", type=Path, default=Path("runs/pools"))
    ap.add_argument("--control-seed", type=int, default=0, help="seed of the controls")
    ap.add_argument("--people", action="store_true",
                    help="also build and judge the real-model world's pool (held out)")
    ap.add_argument("--people-base", default="smollm2-135m")
    ap.add_argument("--people-modules", nargs="+", default=None,
                    help="modules to score the people pool with (default: the fitted "
                         "calibration's non-zero-weight features)")
    ap.add_argument("--robustness", action="store_true",
                    help="also perturb the held-out toy pools' removed and suppressed controls "
                         "(4-bit, one epoch of relearning) and report each figure's robustness")
    ap.add_argument("--people-only", nargs="+", default=(),
                    help="build only these people-world controls (default: all 24)")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from apps.cli.verdict import confusion_table
    from probes.calibrate import evaluate, faithfulness, fit
    from probes.pools import build_pool, load_pool
    from probes.verdict import Calibration, decide
    from workbench.toyworld import build_toyworld
    from workbench.worlds import build_world

    con = Console(width=140)
    built = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        # the world seed changes the people and the trained models; the controls keep their
        # seed, so a held-out pool is the same recipe on a world calibration never saw
        doc = build_pool(build_toyworld(seed=seed, progress=True), args.pools / f"toy{seed}",
                         seed=args.control_seed, progress=True)
        built[seed] = {"seconds": round(time.perf_counter() - t0, 1),
                       "valid": sum(r["status"] == "valid" for r in doc["controls"]),
                       "dropped": {r["name"]: r["reason"] for r in doc["controls"]
                                   if r["status"] != "valid"},
                       "build_seconds": sum(r.get("build_seconds", 0) + r.get("battery_seconds", 0)
                                            for r in doc["controls"])}
    pools = {s: load_pool(args.pools / f"toy{s}") for s in args.seeds}
    t0 = time.perf_counter()
    shipped = Calibration.load()
    cal = (fit([e for s in args.fit_on for e in pools[s]],
               f"bench+toy{'+'.join(map(str, args.fit_on))}") if args.fit_on else shipped)
    fit_s = time.perf_counter() - t0
    held = [s for s in args.seeds if s not in args.fit_on]
    report = {"calibration": cal.to_json(), "fit_seconds": round(fit_s, 3), "pools": built,
              "shipped_calibration": shipped.version, "held_out": {}}
    groups = [(f"toy{s}", pools[s]) for s in held]
    if args.people:
        modules = args.people_modules or [n for n, w in zip(cal.features, cal.weights) if w]
        t0 = time.perf_counter()
        doc = build_pool(build_world(args.people_base, progress=True),
                         args.pools / f"people{args.control_seed}", modules=modules,
                         seed=args.control_seed, only=args.people_only, progress=True)
        built["people"] = {"seconds": round(time.perf_counter() - t0, 1), "modules": modules,
                           "valid": sum(r["status"] == "valid" for r in doc["controls"]),
                           "dropped": {r["name"]: r["reason"] for r in doc["controls"]
                                       if r["status"] != "valid"},
                           # per control: [build, battery] seconds
                           "control_seconds": {r["name"]: [r.get("build_seconds"),
                                                           r.get("battery_seconds")]
                                               for r in doc["controls"]}}
        groups.append(("people", load_pool(args.pools / f"people{args.control_seed}")))
    entries = [e for _, group in groups for e in group]
    t0 = time.perf_counter()
    for e in entries:
        decide(e.findings, cal)
    report["verdict_seconds_per_edit"] = (time.perf_counter() - t0) / max(1, len(entries))
    for name, group in groups + [("all held-out", entries)]:
        if not group:
            continue
        ev, faith = evaluate(group, cal), faithfulness(group, cal)
        report["held_out"][name] = {"evaluation": ev, "faithfulness": faith}
        con.print(confusion_table(ev, name))
    if args.robustness and held:
        from apps.cli.verdict import robustness_table
        from probes.robustness import build_robustness, robustness

        t0 = time.perf_counter()
        for s in held:
            build_robustness(args.pools / f"toy{s}", progress=True)
        rob = robustness([args.pools / f"toy{s}" for s in held], cal)
        report["robustness"] = {"pools": [f"toy{s}" for s in held], "figures": rob,
                                "seconds": round(time.perf_counter() - t0, 1)}
        con.print(robustness_table(rob))
    if entries:
        f = Table(title="faithfulness on all held-out pools (AUC removers vs suppressors)")
        for col in ("module", "reading AUC", "figure", "figure AUC"):
            f.add_column(col)
        for mod, r in report["held_out"]["all held-out"]["faithfulness"].items():
            f.add_row(mod, f"{r['reading_auc']:.3f}", r["figure"], f"{r['figure_auc']:.3f}")
        con.print(f)
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    options = {"seeds": args.seeds, "fit_on": args.fit_on, "control_seed": args.control_seed,
               "robustness": args.robustness}
    options |= ({"people": args.people_base, "people_modules": built["people"]["modules"],
                 "people_only": list(args.people_only)} if args.people else {})
    path = write_results("verdict", options, report)
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
