"""Memory and time of the quantization attack's quantized model: every quantized weight swapped
in at once (a full-precision quantized copy of the model's linear layers, as the attack did
before) against `probes.quantization.quantized` (weights packed once, each layer de-quantized
while it runs), side by side in one run.

    .venv/bin/python bench/quantization_memory.py                    # the people world's M0
    .venv/bin/python bench/quantization_memory.py --world toy --bits 8

Each way runs in a fresh process on the world's original model: its resident memory after the
model loads, the peak while the forget, retain and holdout splits are scored quantized (RTN,
groups of 32), and the seconds; a third process scores them unquantized, so what quantizing
adds is read over the passes' own activations and logits. The per-fact answers of the two
quantized ways must agree (the run fails otherwise). Writes `bench/results/quantization_memory.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from results_io import relative, write_results  # bench/results_io.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("not quantized", "whole copy", "layer at a time")

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from probes.quantization import quantized, quantized_params, rtn
from workbench.behavior import answer_logprobs
from workbench.batching import chunks, encode
from workbench.scoring import answer_scores
way, world_kind, bits = sys.argv[1], sys.argv[2], int(sys.argv[3])
if world_kind == "toy":
    from workbench.toyworld import build_toyworld
    world = build_toyworld(progress=False)
else:
    from workbench.pretrained_world import build_pretrained_world
    world = build_pretrained_world(progress=False)
from workbench.facts import load_facts
from workbench.models import load_subject
facts = load_facts(world.facts_path)
splits = {s: facts.split(s) for s in ("forget", "retain", "holdout") if len(facts.split(s))}
subject = load_subject(str(world.original_dir), device="cpu")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
loaded = rss()
q = rtn(bits, 32)
t0 = time.perf_counter()
if way == "not quantized":  # the passes' own activations and logits: the baseline
    out = {s: answer_logprobs(subject, [f.prompt for f in fs], [f.answer for f in fs], 64)[2] for s, fs in splits.items()}
elif way == "whole copy":
    params = quantized_params(subject.model, q)
    out = {}
    with torch.no_grad():
        for s, fs in splits.items():
            hits = []
            for sl in chunks(len(fs), 64):
                b = encode(subject.tokenizer, [f.prompt for f in fs.facts[sl]],
                           [f.answer for f in fs.facts[sl]])
                hits.append(answer_scores(subject.model, b, params).exact)
            out[s] = torch.cat(hits).numpy()
    del params
else:
    with quantized(subject.model, q):
        out = {s: answer_logprobs(subject, [f.prompt for f in fs], [f.answer for f in fs], 64)[2] for s, fs in splits.items()}
seconds = time.perf_counter() - t0
n_params = sum(p.numel() for p in subject.model.parameters())
print("RESULT " + json.dumps({
    "loaded_mb": loaded, "peak_mb": rss(), "seconds": seconds,
    "weights_mb": n_params * 4 / 2**20,
    "accuracy": {s: float(np.mean(h)) for s, h in out.items()},
    "hits": {s: h.astype(int).tolist() for s, h in out.items()}}))
"""


def one(way: str, world: str, bits: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, way, world, str(bits)], cwd=ROOT,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{way} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    r["growth_mb"] = r["peak_mb"] - r["loaded_mb"]
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="people", choices=["toy", "people"])
    ap.add_argument("--bits", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = {way: one(way, args.world, args.bits) for way in WAYS}
    whole, layered = rows["whole copy"], rows["layer at a time"]
    same = all(whole["hits"][s] == layered["hits"][s] for s in whole["hits"])
    plain = rows["not quantized"]["growth_mb"]
    for way, r in rows.items():
        r["over_plain_mb"] = r["growth_mb"] - plain
        print(f"{way:>16}: +{r['growth_mb']:6.0f} MB over the loaded model, "
              f"+{r['over_plain_mb']:5.0f} MB over the unquantized passes "
              f"({r['over_plain_mb'] / r['weights_mb']:.2f}x the weights' {r['weights_mb']:.0f} "
              f"MB), {r['seconds']:6.1f} s, accuracy " + ", ".join(
                  f"{s} {a:.2f}" for s, a in r["accuracy"].items()))
        r.pop("hits")
    print(f"same answers both ways: {same}")
    path = write_results("quantization_memory", vars(args), {"ways": rows, "same_answers": same})
    print(f"written to {relative(path)}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
