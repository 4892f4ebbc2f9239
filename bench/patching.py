"""Benchmark: exact per-layer residual patching at the answer position, ours vs TransformerLens.

M0 is the bundled SmolLM2-135M; M1 is M0 with Gaussian noise on its last few blocks. Both
implementations patch M0's `resid_post` into M1 at each fact's last prompt token, one layer at a
time, and report the mean answer log-prob per layer. Run: `python bench/patching.py`.
The last line reads `speedup: <ratio>x, max_abs_diff: <value>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
# bench/ comes first on sys.path when run as a script, and bench/probes.py would shadow the
# `probes` package: put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

# 32 simple prompts, used until / unless the built-in SmolLM2 fact set is available.
FALLBACK = [
    ("The capital of France is", " Paris"), ("The capital of Italy is", " Rome"),
    ("The capital of Germany is", " Berlin"), ("The capital of Spain is", " Madrid"),
    ("The capital of Japan is", " Tokyo"), ("The capital of Egypt is", " Cairo"),
    ("The capital of Russia is", " Moscow"), ("The capital of England is", " London"),
    ("The largest planet in the solar system is", " Jupiter"),
    ("The chemical symbol for gold is", " Au"), ("Water is made of hydrogen and", " oxygen"),
    ("The author of Hamlet is William", " Shakespeare"),
    ("The first president of the United States was George", " Washington"),
    ("The Eiffel Tower is in the city of", " Paris"), ("The Colosseum is in the city of", " Rome"),
    ("The opposite of hot is", " cold"), ("The color of the sky on a clear day is", " blue"),
    ("A week has seven", " days"), ("The sun rises in the", " east"),
    ("Bees make", " honey"), ("The currency of Japan is the", " yen"),
    ("The language spoken in Brazil is", " Portuguese"), ("The tallest mountain on Earth is Mount",
                                                          " Everest"),
    ("The freezing point of water in Celsius is", " 0"), ("Albert Einstein developed the theory of",
                                                          " relativity"),
    ("The Great Wall is in", " China"), ("Cats are popular household", " pets"),
    ("The planet closest to the sun is", " Mercury"), ("Romeo and Juliet was written by William",
                                                       " Shakespeare"),
    ("The capital of Canada is", " Ottawa"), ("The capital of Australia is", " Canberra"),
    ("Paris is the capital of", " France"),
]


def facts(n: int) -> tuple[list[str], list[str], str]:
    try:
        from workbench.facts import builtin_facts

        fs = builtin_facts("smollm2").forget
        if len(fs) >= n:
            fs = fs.take(n)
            return [f.prompt for f in fs], [f.answer for f in fs], "builtin:smollm2 forget"
    except Exception:  # noqa: BLE001 - the built-in set may not exist yet: use our own prompts
        pass
    rows = FALLBACK[:n]
    return [p for p, _ in rows], [a for _, a in rows], "bench fallback prompts"


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
    from probes.patching import patch, tl_reference_patching
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
    print(f"speedup: {t_tl / sec:.1f}x, max_abs_diff: {np.abs(vals - ref).max():.2e}")


if __name__ == "__main__":
    main()
