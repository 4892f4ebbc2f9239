"""Benchmark the `sae_clamp` operator: spliced vs plain forward time, side by side in one run,
and (with --facts) forget / retain / holdout accuracy before and after the clamp.

    python bench/sae_clamp.py --model smollm2-135m --sae DIR [--facts smollm2]
    python bench/sae_clamp.py --toyworld            # toy world, SAE trained on the fly

Writes the figures (with the SAE's quality metrics) to `bench/results/sae_clamp.json`, one entry
per set of options.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table


def _time_forward(subject, ids: torch.Tensor, repeats: int) -> list[float]:
    out = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            subject.model(input_ids=ids)
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sae", default=None, help="SAE directory (default: train one on the fly)")
    ap.add_argument("--facts", default=None, help="fact set: accuracy before/after")
    ap.add_argument("--toyworld", action="store_true", help="use the toy world model and facts")
    ap.add_argument("--set", nargs="*", default=[], help="operator config overrides key=value")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    from workbench.behavior import accuracy_by_split
    from workbench.facts import load_facts
    from workbench.models import load_subject
    from workbench.operators import get_operator, make_config

    if args.toyworld:
        from workbench.toyworld import build_toyworld

        world = build_toyworld(progress=True)
        subject, facts = world.original(), world.facts()
    else:
        subject = load_subject(args.model)
        facts = load_facts(args.facts or "smollm2")
    overrides = list(args.set) + ([f"sae={args.sae}"] if args.sae else [])
    cfg = make_config("sae_clamp", overrides)
    t0 = time.perf_counter()
    edit = get_operator("sae_clamp").apply(subject, facts.forget, facts.retain, cfg)
    apply_s = time.perf_counter() - t0
    con = Console()
    con.print(f"sae {edit.metrics['sae']['hook']} ({edit.metrics['sae']['source']}), "
              f"{len(edit.subject.interventions[-1].features)} features, apply {apply_s:.1f} s")

    # Timing: the forget prompts (where the clamp is active), plain and spliced interleaved.
    from workbench.batching import encode

    prompts = [f.prompt for f in facts.forget][: args.batch]
    ids = encode(subject.tokenizer, prompts, device=subject.device).input_ids
    _time_forward(subject, ids, 1), _time_forward(edit.subject, ids, 1)  # warm up
    plain, spliced = [], []
    for _ in range(args.repeats):
        plain += _time_forward(subject, ids, 1)
        spliced += _time_forward(edit.subject, ids, 1)
    p, s = statistics.median(plain), statistics.median(spliced)
    t = Table(title=f"forward pass, {ids.shape[0]}x{ids.shape[1]} tokens, median of "
                    f"{args.repeats} (shared machine: ratios only)")
    for col in ("plain s", "spliced s", "ratio"):
        t.add_column(col, justify="right")
    t.add_row(f"{p:.4f}", f"{s:.4f}", f"{s / p:.2f}x")
    con.print(t)
    timing = {"batch": list(ids.shape), "repeats": args.repeats, "plain_seconds": p,
              "spliced_seconds": s, "ratio": s / p}

    from saes.features import entity_specificity

    spec = entity_specificity(subject, edit.subject.interventions[-1].loaded, facts.forget,
                              facts.retain)
    con.print(f"entity-specific features at the last prompt token: {spec.specific} of "
              f"{spec.alive} alive; {spec.covered} of {spec.entities} entities have one "
              f"({spec.forget_covered} forget entities)")

    before = accuracy_by_split(subject, facts)
    after = accuracy_by_split(edit.subject, facts)
    t = Table(title="accuracy before -> after the clamp")
    for col in ("split", "n", "before", "after", "change (points)"):
        t.add_column(col, justify="right")
    for split, row in before.items():
        a = after[split]["accuracy"]
        t.add_row(split, str(row["n"]), f"{row['accuracy']:.1%}", f"{a:.1%}",
                  f"{100 * (a - row['accuracy']):+.1f}")
    con.print(t)
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("sae_clamp", vars(args), {
        "subject": subject.name, "facts": facts.name, "sae": edit.metrics["sae"],
        "features": len(edit.subject.interventions[-1].features),
        "apply_seconds": round(apply_s, 1), "forward": timing, "entity_specificity": spec,
        "before": before, "after": after})
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
