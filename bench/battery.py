"""Benchmark: all analysis modules (`probes.run_battery`) on the toy world and the bundled model.

M1 is the output-only suppressor control in both worlds (the toy world also passes its retrain
oracle). Prints per-module seconds and readings, and the total against its target (toy world:
60 s on 2 cores; bundled model: 10 minutes). Run: `python bench/battery.py [--world toy|bundled]`.
Writes the same figures to `bench/results/battery.json`, one entry per `--world`.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

TARGETS = {"toy": 60.0, "bundled": 600.0}


def _bundled():
    from workbench.facts import builtin_facts
    from workbench.models import load_subject

    return load_subject("smollm2-135m", device="cpu"), None, builtin_facts("smollm2"), \
        "builtin:smollm2"


def _toy():
    from workbench.toyworld import build_toyworld

    w = build_toyworld(progress=False)
    return w.original(device="cpu"), w.oracle(device="cpu"), w.facts(), "toy world"


def run(world: str, record: dict | None = None) -> float:
    """The battery on `world`; `record` (when given) receives the figures as data."""
    from probes import available, run_battery
    from workbench.controls import output_only_suppressor

    m0, oracle, facts, source = _toy() if world == "toy" else _bundled()
    m1 = output_only_suppressor(m0, facts.forget)
    print(f"\n== {world}: {m0.name} ({m0.n_layers} layers), {len(facts)} facts ({source}, "
          f"{len(facts.forget)} forget), M1 = output-only suppressor, oracle: "
          f"{'yes' if oracle is not None else 'no'}")
    t0 = time.perf_counter()
    findings = run_battery(m0, m1, facts, oracle=oracle, progress=False)
    total = time.perf_counter() - t0
    print(f"{'module':<24}{'seconds':>9}  reading")
    for f in findings:
        print(f"{f.name:<24}{f.seconds:>9.1f}  {f.reading}: {f.reason[:90]}")
    missing = sorted(set(TARGET_MODULES) - set(available()))
    print(f"{'total':<24}{total:>9.1f}  target {TARGETS[world]:.0f} s "
          f"({TARGETS[world] / total:.2f}x headroom){'; missing: ' + str(missing) if missing else ''}")
    if record is not None:
        record.update({"m0": m0.name, "facts": source, "n_facts": len(facts),
                       "oracle": oracle is not None, "total_seconds": round(total, 2),
                       "target_seconds": TARGETS[world], "missing": missing,
                       "modules": {f.name: {"seconds": round(f.seconds, 2), "reading": f.reading,
                                            "reason": f.reason, "scores": f.scores}
                                   for f in findings}})
    return total


TARGET_MODULES = ("behavior_pressure", "logit_lens", "linear_probes", "clusters", "signal",
                  "activation_patching", "attribution_patching", "parameter_restoration")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--world", choices=("toy", "bundled", "both"), default="both")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}")
    results: dict = {}
    for world in (("toy", "bundled") if args.world == "both" else (args.world,)):
        results[world] = {}
        run(world, results[world])
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    print(f"written to {relative(write_results('battery', vars(args), results))}")


if __name__ == "__main__":
    main()
