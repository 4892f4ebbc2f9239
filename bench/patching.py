"""Benchmark: exact per-layer residual patching at the answer position, ours vs TransformerLens.

M0 is the bundled SmolLM2-135M; M1 is M0 with Gaussian noise on its last few blocks. Both
implementations patch M0's `resid_post` into M1 at each fact's last prompt token, one layer at a
time, and report the mean answer log-prob per layer. Run: `python bench/patching.py`.
The last line printed reads `speedup: <ratio>x, max_abs_diff: <value>`; the figures also go to
`bench/results/patching.json`, one entry per set of options.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

def facts(n: int) -> tuple[list[str], list[str], str]:
    """`n` forget rows of the built-in set: its forget prompts, then their paraphrases."""
    from workbench.facts import builtin_facts

    fs = builtin_facts("smollm2").forget
    rows = [(f.prompt, f.answer) for f in fs] + [(p, f.answer) for f in fs for p in f.paraphrases]
    rows = rows[:n]
    return [p for p, _ in rows], [a for _, a in rows], "builtin:smollm2 forget (+ paraphrases)"


def late_noise(subject, n_blocks: int = 4, scale: float = 0.5, seed: int = 0):
    """A copy of `subject` with Gaussian noise (scale x each tensor's std) on its last blocks."""
    edited = subject.clone(source=f"{subject.source}+late-noise")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in edited.layers()[-n_blocks:]:
            for p in blk.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.float().std())
    return edited


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--facts", type=int, default=32)
    ap.add_argument("--with-full", action="store_true",
                    help="also time our full-sequence path (the fallback for prompt-reading hooks)")
    args = ap.parse_args()
    from probes.patch_engine import patch, tl_reference_patching
    from workbench.models import load_subject

    torch.manual_seed(0)
    m0 = load_subject("smollm2-135m", device="cpu")
    m1 = late_noise(m0)
    prompts, answers, source = facts(args.facts)
    n = m0.n_layers
    rows = [(f, ((L, "resid_post", 0),)) for L in range(n) for f in range(len(prompts))]
    m0.hooked, m1.hooked  # build the TransformerLens bridges outside the timed region  # noqa: B018
    print(f"M0 {m0.name} ({n} layers), M1 = noise on the last 4 blocks; {len(prompts)} facts "
          f"({source}); torch threads {torch.get_num_threads()}")

    results = {}
    t = time.perf_counter()
    run = patch(m1, m0, prompts, answers, rows)
    results[f"ours ({run.method})"] = (time.perf_counter() - t,
                                       run.logprobs.reshape(n, -1).mean(1))
    print(f"ours ({run.method}): {results[f'ours ({run.method})'][0]:.2f} s", flush=True)
    if args.with_full:
        t = time.perf_counter()
        full = patch(m1, m0, prompts, answers, rows, method="full")
        results["ours (full)"] = (time.perf_counter() - t, full.logprobs.reshape(n, -1).mean(1))
    t = time.perf_counter()
    ref = tl_reference_patching(m1, m0, prompts, answers, "resid_post")
    t_tl = time.perf_counter() - t
    print(f"transformer_lens: {t_tl:.2f} s", flush=True)

    print(f"\n{'implementation':<34}{'seconds':>10}{'vs TL':>9}{'max |diff| vs TL':>19}")
    print(f"{'transformer_lens generic_activation_patch':<34}{t_tl:>10.2f}{1.0:>8.1f}x{0.0:>19.2e}")
    for name, (sec, vals) in results.items():
        print(f"{name:<34}{sec:>10.2f}{t_tl / sec:>8.1f}x{np.abs(vals - ref).max():>19.2e}")
    print(f"\nmean answer log-prob: M1 {run.base.mean():.3f}, M0 {run.source.mean():.3f}; "
          f"patched at layer 0 / {n // 2} / {n - 1}: {ref[0]:.3f} / {ref[n // 2]:.3f} / "
          f"{ref[-1]:.3f}")
    sec, vals = results[f"ours ({run.method})"]
    from results_io import write_results  # bench/results_io.py, next to this script

    write_results("patching", vars(args), {
        "m0": m0.name, "m1": "noise on the last 4 blocks", "facts": source,
        "n_facts": len(prompts), "transformer_lens_seconds": t_tl,
        "implementations": {name: {"seconds": s, "speedup_vs_tl": t_tl / s,
                                   "max_abs_diff_vs_tl": float(np.abs(v - ref).max())}
                            for name, (s, v) in results.items()},
        "mean_answer_logprob": {"M1": float(run.base.mean()), "M0": float(run.source.mean()),
                                "patched_per_layer": ref}})
    print(f"speedup: {t_tl / sec:.1f}x, max_abs_diff: {np.abs(vals - ref).max():.2e}")


if __name__ == "__main__":
    main()
