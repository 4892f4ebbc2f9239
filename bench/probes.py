"""Benchmark: all analysis modules (`probes.run_battery`) on the toy world and the bundled model.

M1 is the output-only suppressor control in both worlds (the toy world also passes its retrain
oracle). Prints per-module seconds and readings, and the total against its target (toy world:
60 s on 2 cores; bundled model: 10 minutes). Run: `python bench/probes.py [--world toy|bundled]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
# `python bench/probes.py` puts bench/ first on sys.path, where this file would shadow the
# `probes` package: use the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

TARGETS = {"toy": 60.0, "bundled": 600.0}


def _bundled():
    from workbench.facts import Fact, FactSet, builtin_facts
    from workbench.models import load_subject

    m0 = load_subject("smollm2-135m", device="cpu")
    try:
        facts, source = builtin_facts("smollm2"), "builtin:smollm2"
    except Exception:  # noqa: BLE001 - the built-in set may not exist yet: use the bench prompts
        spec = importlib.util.spec_from_file_location("bench_patching", _HERE / "patching.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        FALLBACK = mod.FALLBACK  # noqa: N806

        facts = FactSet(tuple(Fact(f"f{i}", p, a, "forget" if i % 2 == 0 else "retain")
                              for i, (p, a) in enumerate(FALLBACK)), "bench")
        source = "bench fallback prompts (16 forget / 16 retain)"
    return m0, None, facts, source


def _toy():
    from workbench.toyworld import build_toyworld

    w = build_toyworld(progress=False)
    return w.original(device="cpu"), w.oracle(device="cpu"), w.facts(), "toy world"


def run(world: str) -> float:
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
    for world in (("toy", "bundled") if args.world == "both" else (args.world,)):
        run(world)


if __name__ == "__main__":
    main()
