"""Benchmark: one relearning step against one plain fine-tuning step of the same batch.

The relearning step is `probes.relearning.relearn_step` (answer-token NLL, backward, AdamW); the
plain step is what any fine-tuning script does (the HF model's own loss with labels masked to the
answer tokens, backward, AdamW). Each runs on its own clone of the toy world's original model (or
`--model SPEC`, on the built-in facts), on the same batch of forget facts, interleaved (one of
each per round, so load swings hit both alike); the median of the rounds is kept. A third entry,
`attack`, is the step as the attack takes it: on the stand-in `probes.relearning.trainable`
makes (every weight of a copy under 50M parameters, LoRA adapters over the model's own weights
above) with the backward in the micro-batches `workbench.placement.backward_rows` allows. Writes the
model's entry of `bench/results/relearning_step.json`; the last line reads `ratio: <relearn / plain>x (budget
1.2x)` and the exit status is 1 when the ratio is over budget.

    .venv/bin/python bench/relearning_step.py [--model smollm2-135m] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "relearning_step.json"
BUDGET = 1.2


def plain_step(model: torch.nn.Module, opt: torch.optim.Optimizer, b, labels: torch.Tensor
               ) -> float:
    """A plain fine-tuning step: the model's own loss on labels, backward, optimiser step."""
    loss = model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=labels).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model spec (default: the toy world's M0)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    from probes.relearning import (
        Setup,
        _encode,
        default_lrs,
        relearn_step,
        resolve_method,
        trainable,
    )
    from workbench.facts import builtin_facts
    from workbench.models import load_subject
    from workbench.placement import backward_rows
    from workbench.toyworld import build_toyworld

    if args.model is None:
        world = build_toyworld(seed=0, progress=False)
        m0, facts, what = world.original(device=None), world.facts().forget, "toy world M0"
    else:
        m0, facts, what = load_subject(args.model), builtin_facts().forget, args.model
    b = _encode(m0, facts, paraphrases=True)
    b = b.rows(torch.arange(min(args.batch, int(b.input_ids.shape[0]))))
    labels = b.input_ids.masked_fill(~torch.roll(b.answer_mask, 1, dims=1), -100)
    assert int((labels != -100).sum()) == int(b.answer_mask.sum())  # the same answer tokens

    runs = {}
    for name in ("relearn", "plain"):
        s = m0.clone()
        s.model.eval()
        s.model.requires_grad_(True)
        runs[name] = (s.model, torch.optim.AdamW(s.model.parameters(), lr=args.lr,
                                                 weight_decay=0.0))
    method = resolve_method(m0)
    setup = Setup(default_lrs(m0, method), batch_size=args.batch, method=method)
    micro = backward_rows(m0, int(b.input_ids.shape[1]), int(b.input_ids.shape[0]))
    with trainable(m0, setup, 0) as (model, params):
        runs["attack"] = (model, torch.optim.AdamW(params, lr=setup.lrs[0], weight_decay=0.0))
        times: dict[str, list[float]] = {k: [] for k in runs}
        sync = torch.cuda.synchronize if m0.device.type == "cuda" else (lambda: None)
        for r in range(args.warmup + args.rounds):
            for name, (model, opt) in runs.items():
                sync()
                t0 = time.perf_counter()
                if name == "plain":
                    plain_step(model, opt, b, labels)
                else:
                    relearn_step(model, opt, b, micro if name == "attack" else None)
                sync()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["relearn"] / med["plain"]
    out = {"model": what, "device": str(m0.device), "batch_rows": int(b.input_ids.shape[0]),
           "batch_tokens": int(b.attention_mask.sum()), "rounds": args.rounds,
           "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
           "relearn_step_ms": round(1e3 * med["relearn"], 3),
           "plain_step_ms": round(1e3 * med["plain"], 3), "ratio": round(ratio, 3),
           "budget": BUDGET, "attack_method": method, "attack_micro_rows": micro,
           "attack_step_ms": round(1e3 * med["attack"], 3),
           "attack_ratio": round(med["attack"] / med["plain"], 3)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps(done | {what: out}, indent=2) + "\n")  # one entry per model
    print(f"{what} on {m0.device}: batch {out['batch_rows']} rows / {out['batch_tokens']} "
          f"tokens, median of {args.rounds}")
    print(f"relearn step {out['relearn_step_ms']:.2f} ms | plain step {out['plain_step_ms']:.2f} ms")
    print(f"as the attack runs it ({method}, backward in {micro}-row micro-batches): "
          f"{out['attack_step_ms']:.2f} ms, {out['attack_ratio']:.3f}x the plain step")
    print(f"ratio: {ratio:.3f}x (budget {BUDGET}x)")
    return 0 if ratio <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
