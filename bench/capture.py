"""Capture benchmark: plain forward vs TransformerLens run_with_cache vs workbench capture.

On the bundled model, 64 prompts, 4 layers. Each method runs in its own subprocess so that its
peak memory (RSS above the loaded model on CPU; max allocated on CUDA) is its own. Two layer
sets: spanning the model (deepest = last block) and within the first half.

    .venv/bin/python bench/capture.py [--repeats 5] [--batch-size 32] [--device cpu]

Writes every method's time and peak memory to `bench/results/capture.json`, one entry per set of
options.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

METHODS = ("plain_forward", "tl_run_with_cache", "workbench_capture")
LAYER_SETS = {"spanning": [5, 12, 20, 29], "first_half": [2, 5, 8, 11]}


def prompts(n: int = 64) -> list[str]:
    from workbench.facts import builtin_facts

    facts = builtin_facts("smollm2")
    texts = [f.prompt for f in facts] + [p for f in facts for p in f.paraphrases]
    return (texts * (n // len(texts) + 1))[:n]


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(method: str, layers: list[int], repeats: int, batch_size: int, device: str | None):
    import torch

    from workbench.batching import chunks, encode
    from workbench.capture import capture, hook_name
    from workbench.models import load_subject

    torch.set_grad_enabled(False)
    s = load_subject("smollm2-135m", device=device)
    texts = prompts()
    batches = [encode(s.tokenizer, texts[sl], device=s.device)
               for sl in chunks(len(texts), batch_size)]
    names = {hook_name(L) for L in layers}
    if method == "tl_run_with_cache":
        _ = s.hooked  # build the view outside the timed region
    cuda = s.device.type == "cuda"
    base = torch.cuda.memory_allocated() if cuda else _rss_mb()

    def once():
        if method == "plain_forward":
            for b in batches:
                s.model(input_ids=b.input_ids, use_cache=False)
        elif method == "tl_run_with_cache":
            for b in batches:
                s.hooked.run_with_cache(b.input_ids, names_filter=lambda n: n in names)
        else:
            capture(s, texts, layers, position="last", batch_size=batch_size)
        if cuda:
            torch.cuda.synchronize()

    once()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _rss_mb() - base
    return {"method": method, "seconds": statistics.median(times), "peak_mb": peak,
            "device": str(s.device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "LAYERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        layers = [int(x) for x in args.child[1].split(",")]
        print(json.dumps(run_one(args.child[0], layers, args.repeats, args.batch_size,
                                 args.device)))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Capture on SmolLM2-135M: 64 prompts, 4 layers "
                    f"(median of {args.repeats}, batch {args.batch_size})")
    for col in ("layers", "method", "seconds", "vs plain forward", "peak extra MB"):
        t.add_column(col, justify="right")
    summary, measured = {}, {}
    for label, layers in LAYER_SETS.items():
        rows = []
        for method in METHODS:
            cmd = [sys.executable, __file__, "--child", method, ",".join(map(str, layers)),
                   "--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
            if args.device:
                cmd += ["--device", args.device]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        plain = rows[0]["seconds"]
        for r in rows:
            t.add_row(f"{label} {layers}", r["method"], f"{r['seconds']:.3f}",
                      f"{r['seconds'] / plain:.2f}x", f"{r['peak_mb']:.0f}")
        summary[label] = rows[2]["seconds"] / plain
        measured[label] = {"layers": layers, "methods": rows}
    Console().print(t)
    print(f"device: {rows[0]['device']}")
    print("capture/plain ratio: " + ", ".join(f"{k} {v:.2f}x" for k, v in summary.items()))
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("capture", {k: v for k, v in vars(args).items() if k != "child"},
                         {"prompts": 64, "layer_sets": measured,
                          "capture_over_plain": summary})
    print(f"written to {relative(path)}")


if __name__ == "__main__":
    main()
