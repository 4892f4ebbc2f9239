"""Time the part-A analysis modules on the toy-world controls (and optionally SmolLM2's built-in
facts with an output-only suppressor): `python bench/probes_a.py [--smollm2]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

# bench/ holds a probes.py of its own: keep it from shadowing the `probes` package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from probes import run_battery  # noqa: E402
from workbench.controls import identity_edit, output_only_suppressor  # noqa: E402
from workbench.toyworld import build_toyworld  # noqa: E402

MODULES = ("behavior_pressure", "logit_lens", "linear_probes", "clusters", "signal")


def _table(title: str, rows: list[tuple[str, str, str, float]]) -> None:
    print(f"\n{title}  (torch threads: {torch.get_num_threads()})")
    print(f"{'control':<12} {'module':<18} {'reading':<22} {'seconds':>8}")
    for control, module, reading, sec in rows:
        print(f"{control:<12} {module:<18} {reading:<22} {sec:>8.2f}")


def main() -> None:
    world = build_toyworld(progress=False)
    m0, mr, facts = world.original("cpu"), world.oracle("cpu"), world.facts()
    rows = []
    for name, m1 in (("suppressor", output_only_suppressor(m0, facts.forget)),
                     ("oracle", mr), ("identity", identity_edit(m0))):
        t0 = time.perf_counter()
        for f in run_battery(m0, m1, facts, oracle=mr, modules=MODULES, progress=False):
            rows.append((name, f.name, f.reading, f.seconds))
        rows.append((name, "ALL", "", time.perf_counter() - t0))
    _table(f"toy world ({len(facts)} facts)", rows)
    if "--smollm2" in sys.argv:
        from workbench.facts import builtin_facts
        from workbench.models import load_subject

        s0 = load_subject("smollm2-135m", device="cpu")
        fs = builtin_facts("smollm2")
        s1 = output_only_suppressor(s0, fs.forget)
        t0 = time.perf_counter()
        rows = [("suppressor", f.name, f.reading, f.seconds)
                for f in run_battery(s0, s1, fs, modules=MODULES, progress=False)]
        rows.append(("suppressor", "ALL", "", time.perf_counter() - t0))
        _table(f"SmolLM2 built-in facts ({len(fs)} facts)", rows)


if __name__ == "__main__":
    main()
