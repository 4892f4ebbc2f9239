"""One torch intra-op thread against several for a small model's forward pass, on this machine
under its current load: what `tests/conftest.py` weighs when it drops to one thread on an
oversubscribed machine, and `workbench.toyworld` when it scores the toy models on one thread.

    python bench/threads.py [--threads CORES] [--repeats 20] [--batch 32]

The toy world's original model runs a batch of its fact prompts, one thread and `--threads`
threads interleaved, median of `--repeats`. The answer depends on how busy the machine is, so
the load average goes with it. Prints the two times; writes them to `bench/results/threads.json`,
one entry per set of options. Seconds on a CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="the many-thread side (default: every core)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import torch

    from workbench.batching import encode
    from workbench.toyworld import build_toyworld

    default, many = torch.get_num_threads(), args.threads
    world = build_toyworld(progress=False)
    m0 = world.original(device="cpu")
    prompts = [f.prompt for f in world.facts()][: args.batch]
    ids = encode(m0.tokenizer, prompts).input_ids
    load_before = os.getloadavg()
    times: dict[int, list[float]] = {1: [], many: []}
    with torch.no_grad():
        for n in times:  # warm up both
            torch.set_num_threads(n)
            m0.model(input_ids=ids)
        for _ in range(args.repeats):
            for n in times:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                m0.model(input_ids=ids)
                times[n].append(time.perf_counter() - t0)
    torch.set_num_threads(default)
    one, several = statistics.median(times[1]), statistics.median(times[many])
    cores = os.cpu_count() or 1
    print(f"{m0.name}, batch {tuple(ids.shape)}, median of {args.repeats}; {cores} cores, "
          f"load average {load_before[0]:.1f} before the run")
    print(f"1 thread: {one * 1e3:.2f} ms; {many} threads: {several * 1e3:.2f} ms "
          f"({several / one:.2f}x the one-thread time)")
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("threads", vars(args), {
        "subject": m0.name, "batch": list(ids.shape), "cores": cores,
        "load_average_before": list(load_before), "many_threads": many,
        "one_thread_seconds": one, "many_threads_seconds": several,
        "many_over_one": several / one})
    print(f"written to {relative(path)}")


if __name__ == "__main__":
    main()
