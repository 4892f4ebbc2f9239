"""Do the science tests hold on other toy worlds? Builds the toy world of each seed (cached by
config hash like the default one) and runs every test that reads it (`-m "toyworld and not slow"`)
against it, one pytest session per seed. Prints a pass table and writes
`bench/results/toy_seeds.json` (one entry per set of options); exits non-zero when a test fails
on any seed.

    .venv/bin/python bench/toy_seeds.py --seeds 1 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from results_io import relative, write_results  # bench/results_io.py, next to this script

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, extra: list[str], workers: int = 1) -> dict:
    """One pytest session on the toy world of `seed` (its files spread over `workers`
    processes): per-test outcome, world figures, time."""
    from workbench.toyworld import build_toyworld

    t0 = time.perf_counter()
    world = build_toyworld(seed=seed, progress=True)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "toyworld and not slow", "-q",
               "-p", "no:cacheprovider", f"--junitxml={xml}", *extra]
        if workers > 1:
            cmd += ["-n", str(workers), "--dist", "loadfile"]
        env = {**os.environ, "WORKBENCH_TOY_SEED": str(seed)}
        t1 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        outcomes = _outcomes(xml) if xml.exists() else {}
    acc = world.stats["accuracy"]
    return {"seed": seed, "returncode": proc.returncode, "tests": outcomes,
            "build_seconds": round(build_s, 1), "test_seconds": round(time.perf_counter() - t1, 1),
            "oracle_forget": acc["oracle"]["forget"]["accuracy"],
            "original": {s: acc["original"][s]["accuracy"] for s in acc["original"]},
            "oracle": {s: acc["oracle"][s]["accuracy"] for s in acc["oracle"]}}


def _outcomes(xml: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag for child in case}
        out[name] = ("failed" if tags & {"failure", "error"} else
                     "skipped" if "skipped" in tags else "passed")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4),
                    help="pytest worker processes per seed (pytest-xdist; 1: none)")
    ap.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = ap.parse_args()
    runs = [run_seed(s, args.pytest_args, args.workers) for s in args.seeds]
    names = sorted({n for r in runs for n in r["tests"]})
    print(f"\n{'seed':>5} {'passed':>7} {'failed':>7} {'oracle forget':>14} {'build s':>8} "
          f"{'tests s':>8}")
    for r in runs:
        counts = [sum(v == k for v in r["tests"].values()) for k in ("passed", "failed")]
        print(f"{r['seed']:>5} {counts[0]:>7} {counts[1]:>7} {r['oracle_forget']:>14.3f} "
              f"{r['build_seconds']:>8.1f} {r['test_seconds']:>8.1f}")
    failed = [(n, r["seed"]) for n in names for r in runs if r["tests"].get(n) == "failed"]
    for n, s in failed:
        print(f"FAILED on seed {s}: {n}")
    path = write_results("toy_seeds", vars(args), {"seeds": runs, "failed": failed})
    ok = not failed and all(r["returncode"] == 0 for r in runs)
    print(f"{'all toy-world tests pass' if ok else 'FAILURES'} on seeds {args.seeds}; "
          f"written to {relative(path)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
