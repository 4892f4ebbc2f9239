"""Benchmark every registered unlearning operator on the worlds and on SmolLM2's built-in facts.

    python bench/operators.py                       # all operators, toy world and SmolLM2
    python bench/operators.py --models people       # SmolLM2 fine-tuned on fictitious people
    python bench/operators.py --models toy --operators ga,npo
    python bench/operators.py --models smollm2 --operators ga,npo --step-only
    python bench/operators.py --models toy --operators rmu --set steps=240

Prints, per model: wall time and forget / retain / holdout accuracy before -> after with their
default configs (or with `--set` overrides for every operator), and whether the quality bars
hold; then a plain fine-tuning step against an NPO step on the same batch with the same trainable
parameters (median of interleaved repeats). Writes the same figures, with the answer log-probs
and each edit's config and metrics (the training log: steps, periodic forget / retain accuracy),
to `bench/results/operators.json` under the options of the run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from workbench.behavior import accuracy_by_split
from workbench.entities import with_entities
from workbench.errors import WorkbenchError
from workbench.facts import FactSet, builtin_facts
from workbench.models import Subject, load_subject
from workbench.operators import OPERATORS, get_operator, make_config
from workbench.operators.gradient import NPOConfig, plain_step_loss
from workbench.operators.training import (
    FactTensors,
    Sampler,
    freeze_except,
    reference_sequence_logprob,
    sequence_logprob,
    trainable_modules,
)

console = Console(width=150)  # wide tables also when the output is a log file


def load_model(which: str, toy_root: str | None, facts_file: str | None = None
               ) -> tuple[Subject, FactSet, Subject | None]:
    """The subject, its facts and (worlds only) the retrain oracle, the reference row."""
    if which == "people":
        from workbench.pretrained_world import build_pretrained_world

        world = build_pretrained_world()
        return world.original(device="cpu"), world.facts(), world.oracle(device="cpu")
    if which == "toy":
        from pathlib import Path

        from workbench.toyworld import build_toyworld

        root = Path(toy_root) if toy_root else None
        if root is not None and (root / "original" / "config.json").exists():
            oracle = root / "oracle" / "config.json"
            return (load_subject(str(root / "original"), device="cpu"),
                    FactSet.load(root / "facts.jsonl"),
                    load_subject(str(oracle.parent), device="cpu") if oracle.exists() else None)
        world = build_toyworld(root)
        return world.original(device="cpu"), world.facts(), world.oracle(device="cpu")
    facts = FactSet.load(facts_file) if facts_file else builtin_facts("smollm2")
    return load_subject("smollm2-135m", device="cpu"), facts, None


def bars(which: str, before: dict, after: dict) -> str:
    """The quality bars of the task: toy <= 10% forget, holdout drop <= 10 points; SmolLM2
    <= 20% forget with holdout >= 80% of the original's; people world: forget <= 25% (its
    oracle's 15% plus 10 points), holdout drop <= 10 points."""
    f, hb, ha = after["forget"]["accuracy"], before["holdout"]["accuracy"], after["holdout"]["accuracy"]
    if which == "toy":
        ok = f <= 0.10 and hb - ha <= 0.10
    elif which == "people":
        ok = f <= 0.25 and hb - ha <= 0.10
    else:
        ok = f <= 0.20 and ha >= 0.8 * hb
    return "yes" if ok else "no"


def _splits(acc: dict[str, Any]) -> dict[str, Any]:
    """accuracy_by_split, for the results file."""
    return {s: {k: acc[s][k] for k in ("n", "accuracy", "logprob") if k in acc[s]} for s in acc}


def run_operators(which: str, subject: Subject, facts: FactSet, names: list[str], seed: int,
                  generate: bool, oracle: Subject | None = None,
                  overrides: list[str] | None = None, record: dict | None = None,
                  save_to: Path | None = None) -> Table:
    """The table of operators; `record` (when given) receives the same figures as data; each
    edit is saved under `save_to/<operator>` when given (`bench/attacks.py --edits-from`)."""
    record = {} if record is None else record
    before = accuracy_by_split(subject, facts, generate=generate)
    record.update({"subject": subject.name, "facts": facts.name,
                   "n": {s: len(facts.split(s)) for s in facts.splits()},
                   "before": _splits(before), "operators": {}})
    t = Table(title=f"{which}: {subject.name} on {facts.name} ({len(facts.forget)} forget, "
                    f"{len(facts.retain)} retain, {len(facts.holdout)} holdout)")
    shown = [s for s in ("forget", "retain", "holdout", "unseen") if s in before]
    for col in ("operator", "family", "wall s", "steps", *shown, "bar"):
        t.add_column(col, justify="right")
    if oracle is not None:  # the gold standard of removal: retrained without the forget people
        ref = accuracy_by_split(oracle, facts, generate=generate)
        record["oracle"] = {"after": _splits(ref), "bar": bars(which, before, ref)}
        t.add_row("retrain oracle", "reference", "-", "-",
                  *(f"{before[s]['accuracy']:.0%} -> {ref[s]['accuracy']:.0%}" for s in shown),
                  bars(which, before, ref))
    for name in names:
        op = get_operator(name)
        t0 = time.perf_counter()
        try:
            edit = op.apply(subject, facts.forget, facts.retain,
                            make_config(name, list(overrides or []), seed=seed))
        except WorkbenchError as e:  # one operator's bad fit must not end the benchmark
            record["operators"][name] = {"error": str(e)}
            t.add_row(name, op.family.split("-")[0], "-", "-", f"error: {e}"[:60],
                      *[""] * (len(shown) - 1), "no")
            continue
        wall = time.perf_counter() - t0
        if save_to is not None:
            edit.save(save_to / name)
        after = accuracy_by_split(edit.subject, facts, generate=generate)
        steps = edit.metrics.get("training", {}).get("steps", "-")

        def cell(split: str, after: dict[str, Any] = after) -> str:
            if split not in before:
                return "-"
            return f"{before[split]['accuracy']:.0%} -> {after[split]['accuracy']:.0%}"

        record["operators"][name] = {"family": op.family, "wall_seconds": round(wall, 2),
                                     "after": _splits(after), "bar": bars(which, before, after),
                                     "config": edit.config, "metrics": edit.metrics}
        t.add_row(name, op.family.split("-")[0], f"{wall:.1f}", str(steps),
                  *map(cell, shown), bars(which, before, after))
        console.print(f"[dim]{which}/{name} done in {wall:.1f} s[/]")
    return t


def step_overhead(which: str, subject: Subject, facts: FactSet, repeats: int,
                  record: dict | None = None) -> Table:
    """Plain NLL step vs NPO step: same batch, same trainable parameters, interleaved;
    `record` (when given) receives the figures as data."""
    cfg = NPOConfig()
    edited = subject.clone()
    params = freeze_except(edited.model, trainable_modules(edited, cfg.params, cfg.layers))
    ft = FactTensors.of(edited, facts.forget)
    idx = Sampler(len(facts.forget), cfg.batch_size, 0).next()
    t0 = time.perf_counter()
    ref = reference_sequence_logprob(edited.model, ft)
    ref_s = time.perf_counter() - t0
    plain = plain_step_loss(ft)

    def npo(model, fi, ri):
        lr = sequence_logprob(model, ft.rows(fi)) - ref[fi]
        return -(2 / cfg.beta) * torch.nn.functional.logsigmoid(-cfg.beta * lr).mean()

    opt = torch.optim.AdamW(params, lr=1e-6)
    times: dict[str, list[float]] = {"plain": [], "npo": []}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("npo", npo)):
            t0 = time.perf_counter()
            loss = fn(edited.model, idx, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    p, n = statistics.median(times["plain"]), statistics.median(times["npo"])
    t = Table(title=f"{which}: one training step, batch of {len(idx)} forget facts, "
                    f"{sum(x.numel() for x in params):,} trainable params (median of {repeats})")
    for col in ("plain step s", "npo step s", "npo / plain", "reference precompute s (once)"):
        t.add_column(col, justify="right")
    t.add_row(f"{p:.4f}", f"{n:.4f}", f"{n / p:.2f}x", f"{ref_s:.3f}")
    if record is not None:
        record.update({"batch": len(idx), "trainable_params": sum(x.numel() for x in params),
                       "repeats": repeats, "plain_step_seconds": p, "npo_step_seconds": n,
                       "npo_over_plain": n / p, "reference_precompute_seconds": ref_s})
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="toy,smollm2", help="comma list of toy, people, smollm2")
    ap.add_argument("--operators", default="all", help="comma list, or 'all' registered")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per kind")
    ap.add_argument("--toy-root", default=None, help="toy world directory (default: cache)")
    ap.add_argument("--facts", default=None, help="fact file for smollm2 (default: built-in)")
    ap.add_argument("--step-only", action="store_true", help="only the step-time comparison")
    ap.add_argument("--teacher-forced", action="store_true",
                    help="score accuracy teacher-forced instead of by greedy generation")
    ap.add_argument("--save-edits", default=None, metavar="DIR",
                    help="save each edit to DIR/<model>/<operator> (replacing an older one)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every operator (one without the key: an error row)")
    args = ap.parse_args()
    names = sorted(OPERATORS) if args.operators == "all" else args.operators.split(",")
    for n in names:
        get_operator(n)
    torch.manual_seed(args.seed)
    console.print(f"torch threads: {torch.get_num_threads()} (timings are noisy on a shared CPU)")
    results: dict[str, Any] = {}
    for which in args.models.split(","):
        subject, facts, oracle = load_model(which, args.toy_root, args.facts)
        facts, _ = with_entities(facts)  # as `workbench unlearn` does for unannotated files
        results[which] = rec = {"edits": None, "step": {}}
        if not args.step_only:
            rec["edits"] = {}
            console.print(run_operators(which, subject, facts, names, args.seed,
                                        not args.teacher_forced, oracle, args.set,
                                        rec["edits"], save_to=Path(args.save_edits) / which
                                        if args.save_edits else None))
        console.print(step_overhead(which, subject, facts, args.repeats, rec["step"]))
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("operators", vars(args), results)
    console.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
