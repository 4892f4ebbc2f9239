"""How long an audit takes and how much memory it holds, per world and tier, with each module's
share of the time. Each audit runs in a fresh process (so its peak resident memory is its own)
on a new run directory (nothing resumed); the edited model is the world's retrain oracle unless
`--edited` names a saved edit. Peak memory is set beside one model's weights (the issue's target:
at most 3x), both as the process's whole peak and as the audit's own (the peak less the
interpreter with torch, transformers, scikit-learn and plotly imported, before any model loads),
and after the models load and each module.

    python bench/audit.py                                   # toy world, quick and full
    python bench/audit.py --worlds toy people --tiers quick
    python bench/audit.py --worlds people --dtype bfloat16  # the GPU's precision (any device)
    python bench/audit.py --pair ORIGINAL EDITED FACTS --tiers full --device auto  # any pair

Writes `bench/results/audit.json`, one entry per set of options.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import relative, write_results  # bench/results_io.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
TARGETS_S = {("toy", "quick"): 30, ("toy", "full"): 180, ("people", "quick"): 180,
             ("people", "full"): 900}

# Run in the child: load, audit, and print what it measured as one JSON line.
CHILD = r"""
import json, resource, sys, time
import torch
world_kind, tier, edited, out, device, dtype = sys.argv[1:7]
device = device or None
t0 = time.perf_counter()
if world_kind == "pair":
    original, edited, facts = json.loads(edited)
    oracle = None
elif world_kind == "toy":
    from workbench.toyworld import build_toyworld
    world = build_toyworld(progress=False)
else:
    from workbench.pretrained_world import build_pretrained_world
    world = build_pretrained_world(progress=False)
if world_kind != "pair":
    original, facts = str(world.original_dir), str(world.facts_path)
    edited, oracle = edited or str(world.oracle_dir), str(world.oracle_dir)
# the peak so far after the models load and after each module (the peak only grows: the module
# that raises it is the one to look at)
import probes.audit as pa
import probes.base as pb
import apps.audit, sklearn.linear_model, plotly.graph_objects  # what every audit imports
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the interpreter, no model
peaks = {}
def _rss():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
_battery, _call = pa.run_battery, pb.ProbeSpec.__call__
def _battery_tracked(*a, **k):
    peaks["models loaded"] = _rss()
    return _battery(*a, **k)
def _call_tracked(self, *a, **k):
    f = _call(self, *a, **k)
    peaks[self.name] = _rss()
    return f
pa.run_battery, pb.ProbeSpec.__call__ = _battery_tracked, _call_tracked
from apps.audit import audit
run = audit(original, edited, facts, out, oracle=oracle, tier=tier, progress=False, device=device,
            dtype=dtype)
elapsed = round(time.perf_counter() - t0, 1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the count's load below
gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
place = json.load(open(out + "/manifest.json"))["placement"]
from workbench.models import load_subject
n_params = sum(p.numel() for p in load_subject(original, device="cpu").model.parameters())
weights = n_params * getattr(torch, place["dtype"]).itemsize
print("RESULT " + json.dumps({
    "seconds": elapsed,
    "audit_seconds": run.report["timings"]["total_s"],
    "findings_s": run.report["timings"]["findings_s"],
    "peak_rss_mb": peak / 1024,
    "start_rss_mb": base_rss / 1024, "weights_mb": weights / 2**20, "placement": place,
    "gpu_peak_mb": gpu, "peak_mb_after": peaks,
    "verdict": run.verdict.verdict, "removal_score": run.verdict.removal_score,
    "n_facts": run.report["facts"]["n"] if isinstance(run.report.get("facts"), dict) else None}))
"""


def one(world: str, tier: str, edited: str | None, device: str | None = None,
        dtype: str = "auto") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", CHILD, world, tier, edited or "", str(Path(tmp) / "run"),
               device or "", dtype]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"the {world} {tier} audit failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    total = sum(r["findings_s"].values()) or 1.0
    r["share"] = {k: round(v / total, 3) for k, v in sorted(r["findings_s"].items(),
                                                            key=lambda kv: -kv[1])}
    r["peak_over_weights"] = round(r["peak_rss_mb"] / r["weights_mb"], 2)
    # what the audit itself holds: the peak over the interpreter with its libraries imported
    r["audit_peak_over_weights"] = round((r["peak_rss_mb"] - r["start_rss_mb"])
                                         / r["weights_mb"], 2)
    r["target_s"] = TARGETS_S.get((world, tier))
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", nargs="+", default=["toy"], choices=["toy", "people"])
    ap.add_argument("--tiers", nargs="+", default=["quick", "full"], choices=["quick", "full"])
    ap.add_argument("--edited", default=None, help="a saved edit to audit (default: the oracle)")
    ap.add_argument("--pair", nargs=3, metavar=("ORIGINAL", "EDITED", "FACTS"), default=None,
                    help="audit this pair of model specs on this fact file instead of a world")
    ap.add_argument("--device", default=None, help="cpu, cuda, auto (default: the GPU if any)")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    args = ap.parse_args()
    rows = {}
    worlds = ["pair"] if args.pair else args.worlds
    edited = json.dumps(args.pair) if args.pair else args.edited
    for world in worlds:
        for tier in args.tiers:
            t = time.perf_counter()
            rows[f"{world}/{tier}"] = r = one(world, tier, edited, args.device, args.dtype)
            gpu = f", GPU peak {r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] else ""
            print(f"{world:>7} {tier:>5}: audit {r['audit_seconds']:7.1f} s (target "
                  f"{r['target_s']} s), process {r['seconds']:7.1f} s, peak {r['peak_rss_mb']:6.0f}"
                  f" MB = {r['peak_over_weights']:.1f}x one model's weights "
                  f"({r['weights_mb']:.0f} MB; {r['audit_peak_over_weights']:.1f}x over the "
                  f"{r['start_rss_mb']:.0f} MB interpreter), verdict {r['verdict']} "
                  f"({r['removal_score']:.2f}), {r['placement']['dtype']} on "
                  f"{r['placement']['device']}{gpu} [{time.perf_counter() - t:.0f} s]", flush=True)
            top = list(r["share"].items())[:4]
            print("         largest shares: " + ", ".join(f"{k} {v:.0%}" for k, v in top))
            print("         peak MB after: " + ", ".join(f"{k} {v}" for k, v in
                                                      r["peak_mb_after"].items()))
    path = write_results("audit", vars(args), {"runs": rows, "threads": os.environ.get(
        "OMP_NUM_THREADS", "default")})
    print(f"written to {relative(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
