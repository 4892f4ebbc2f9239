"""Benchmark the recovery attacks on each operator's default edit, on the toy world and on the
bundled model's built-in facts.

    python bench/attacks.py                                  # toy world, every edit, every attack
    python bench/attacks.py --models smollm2                 # bundled model, the cheap edits
    python bench/attacks.py --models toy --operators ga,identity --attacks relearning,membership
    python bench/attacks.py --attacks quantization --set quantization.bnb=true  # + NF4 / int8

For each edit M1 (every registered operator with its default config, the controls `identity` and
`output_only_suppressor`, and, with an oracle, the retrain oracle itself as M1) the attacks run
one after another on (M0, M1, facts, oracle) through `probes.get_probe`, and each attack's
recovery of M1 is printed beside its floor (the same attack on the retrain oracle; without one,
the weaker floor each module states), with the module's reading and wall seconds. Attack seconds
are cold per pair: M0 and the oracle are reloaded for every edit, so nothing a module memoises
on one pair (e.g. the oracle's relearning curve) is reused by the next. The operator's own time
is recorded apart. Targets (issue): the whole attack set for one pair under 60 s on the toy
world (2 CPU cores), under 5 minutes on the bundled model.

On the bundled model (no oracle, no `unseen` split) and on the people world (`--models people`:
SmolLM2 taught fictitious people, with its retrain oracle) only the cheap edits run by default
(`steer`, `prune`, `prompt`, the output-only suppressor, and on the people world the identity and
the oracle; the training operators take minutes each and run when named in `--operators`), and
`activation_patching` is skipped without an oracle: its attack figure here is UDS, which patches
a retrain oracle's activations into M0. `--attacks` takes any analysis module, so the same run
gives the other modules' readings of the same pairs:

    python bench/attacks.py --models people --operators oracle,identity,output_only_suppressor \
        --attacks behavior_pressure,logit_lens,linear_probes,clusters,signal,...

An operator that refuses (e.g.
`prompt` on the toy world: its prefix exceeds the positions) is recorded as refused; an attack
that crashes is recorded with its error and the run goes on.

Writes every figure (readings, reasons, all scores, seconds) to `bench/results/attacks.json`
under the options of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

ATTACKS = ("relearning", "quantization", "directional_ablation", "in_context_recovery",
           "membership", "activation_patching")
CONTROLS = ("identity", "output_only_suppressor", "late_blocks_suppressor")
ORACLE = "oracle"
SMOLLM2_DEFAULT = ("steer", "prune", "prompt", "output_only_suppressor")
TARGETS = {"toy": 60.0, "smollm2": 300.0, "people": 300.0}  # seconds for the whole attack set on one pair
INITIAL = {"removal-consistent": "R", "suppression-signature": "S", "inconclusive": "I"}


# ---------------------------------------------------------------------------------------------
# models


def load_world(which: str) -> tuple[Callable[[], Any], Callable[[], Any] | None, Any, str]:
    """Loaders of M0 and the oracle (None: no oracle), the fact set, and its description."""
    from workbench.models import load_subject

    if which == "toy":
        from workbench.toyworld import build_toyworld

        world = build_toyworld(progress=False)  # cached by config hash

        return (lambda: world.original(device="cpu"), lambda: world.oracle(device="cpu"),
                world.facts(), f"toy world {world.stats['config_hash']}")
    if which == "people":  # SmolLM2 taught fictitious people, with its retrain oracle
        from workbench.pretrained_world import build_pretrained_world

        people = build_pretrained_world(progress=False)
        return (lambda: people.original(device="cpu"), lambda: people.oracle(device="cpu"),
                people.facts(), f"people world {people.stats['config_hash']}")
    if which == "smollm2":
        from workbench.facts import builtin_facts

        return (lambda: load_subject("smollm2-135m", device="cpu"), None,
                builtin_facts("smollm2"), "builtin:smollm2")
    raise SystemExit(f"unknown model {which!r}: expected toy, people or smollm2")


def default_edits(which: str, has_oracle: bool) -> list[str]:
    from workbench.operators import OPERATORS

    if which in ("smollm2", "people"):  # the training operators: when named
        return [*SMOLLM2_DEFAULT, *(["identity", ORACLE] if has_oracle else [])]
    return [*sorted(OPERATORS), *CONTROLS, *([ORACLE] if has_oracle else [])]


def make_edit(name: str, m0: Any, facts: Any, oracle_loader: Callable[[], Any] | None,
              seed: int, saved: Path | None = None) -> tuple[Any, str, dict[str, Any]]:
    """M1 for one edit name, its kind, and what the operator reported (timings, config); an
    operator's edit saved under `saved/<name>` (`bench/operators.py --save-edits`) is loaded."""
    from workbench.controls import identity_edit, late_blocks_suppressor, output_only_suppressor
    from workbench.edits import read_edit_json
    from workbench.models import load_subject
    from workbench.operators import get_operator, make_config

    if saved is not None and (saved / name / "edit.json").exists():
        doc = read_edit_json(saved / name)
        return (load_subject(str(saved / name), device="cpu"), doc.get("family", "?"),
                {"config": doc.get("config"), "timings": doc.get("timings"),
                 "loaded_from": str(saved / name)})
    if name == "late_blocks_suppressor":
        return late_blocks_suppressor(m0, facts.forget, facts.retain, seed=seed), "control", {}
    if name == "identity":
        return identity_edit(m0), "control", {}
    if name == "output_only_suppressor":
        return output_only_suppressor(m0, facts.forget), "control", {}
    if name == ORACLE:
        if oracle_loader is None:
            raise SystemExit("the oracle as M1 needs a model with a retrain oracle (toy)")
        # a separate load: M1 and the floor model are distinct objects, so the floor's
        # memoised results are not handed to M1 for free
        return oracle_loader(), "oracle", {}
    op = get_operator(name)
    edit = op.apply(m0, facts.forget, facts.retain, make_config(name, seed=seed))
    return edit.subject, op.family, {"config": edit.config, "timings": edit.timings}


def split_accuracy(m: Any, facts: Any) -> dict[str, float]:
    """Teacher-forced greedy exact match per split (memoised per model: free after the gate)."""
    from probes.common import exact_match

    return {s: float(exact_match(m, facts.split(s)).mean())
            for s in ("forget", "retain", "holdout") if len(facts.split(s))}


# ---------------------------------------------------------------------------------------------
# what each module reports


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def headline(name: str, scores: dict[str, float]) -> dict[str, Any]:
    """The attack's main figure for M1 and its floor, from the keys each module writes:
    recoveries on the 0 = M1, 1 = M0 scale (relearning: the variant with most recovery over its
    floor; quantization: the quantizer the module read), membership ROC AUCs (floor: the
    oracle's, else chance 0.5), UDS for activation patching (1 = erased as deep as the oracle)."""
    g = scores.get
    if name == "relearning":
        variants = [v for v in ("rtt", "entity") if f"{v}_recovery_M1" in scores]
        if not variants:
            return {"metric": "recovery", "m1": None, "floor": None}

        def over(v: str) -> float:
            o = _num(g(f"{v}_over_floor"))
            r = _num(g(f"{v}_recovery_M1"))
            return o if o is not None else (r if r is not None else -math.inf)

        v = max(variants, key=over)
        return {"metric": "recovery", "variant": v, "m1": _num(g(f"{v}_recovery_M1")),
                "floor": _num(g(f"{v}_recovery_floor"))}
    if name == "quantization":
        return {"metric": "recovery", "m1": _num(g("recovery")), "floor": _num(g("floor"))}
    if name in ("directional_ablation", "in_context_recovery"):
        return {"metric": "recovery", "m1": _num(g("recovery")),
                "floor": _num(g("floor_recovery"))}
    if name == "membership":
        if "auc_M1" not in scores:
            return {"metric": "auc", "m1": None, "floor": None}
        return {"metric": "auc", "m1": _num(g("auc_M1")), "m0": _num(g("auc_M0")),
                "floor": _num(g("auc_Mr", 0.5))}
    if name == "activation_patching":
        return {"metric": "uds", "m1": _num(g("uds")), "floor": None,
                "best_single_recovery": _num(g("best_single_recovery"))}
    return {"metric": "reading", "m1": None, "floor": None}  # an analysis module, not an attack


def _crash(e: BaseException) -> dict[str, Any]:
    """Where an attack crashed: the innermost frame in the project, and the message."""
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if "/site-packages/" not in f.filename] or tb
    last = ours[-1]
    return {"error": f"{type(e).__name__}: {e}", "file": last.filename, "line": last.lineno,
            "function": last.name, "traceback": "".join(traceback.format_exception(e))[-4000:]}


def run_attack(name: str, m0: Any, m1: Any, facts: Any, oracle: Any, seed: int,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
    from probes import get_probe

    t0 = time.perf_counter()
    try:
        f = get_probe(name)(m0, m1, facts, oracle=oracle, seed=seed, device="cpu",
                            **(options or {}))
    except Exception as e:  # noqa: BLE001 (one attack's crash must not end the benchmark)
        return {"seconds": round(time.perf_counter() - t0, 2), **_crash(e)}
    return {"seconds": round(time.perf_counter() - t0, 2), "reading": f.reading,
            "reason": f.reason, **headline(name, f.scores), "scores": f.scores,
            "meta": {k: v for k, v in f.meta.items() if k != "thresholds"}}


def attack_options(pairs: list[str], attacks: list[str]) -> dict[str, dict[str, Any]]:
    """`--set ATTACK.KEY=VALUE` pairs as {attack: {key: value}} (values JSON, else strings)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, raw = pair.partition("=")
        attack, dot, key = target.partition(".")
        if not (sep and dot and key) or attack not in attacks:
            raise SystemExit(f"--set {pair!r}: expected ATTACK.KEY=VALUE with ATTACK one of "
                             f"{', '.join(attacks)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(attack, {})[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# the table


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if metric in ("auc", "uds") else f"{x:+.2f}"


def cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    if "skipped" in r:
        return "n/a"
    if "error" in r:
        return "CRASH"
    metric = r["metric"]
    if metric == "reading":
        return r["reading"]
    pre = {"auc": "AUC ", "uds": "UDS "}.get(metric, "")
    body = _fmt(r["m1"], metric) if metric == "uds" else \
        f"{_fmt(r['m1'], metric)} / {_fmt(r['floor'], metric)}"
    return f"{pre}{body} ({INITIAL.get(r['reading'], '?')})"


def table(which: str, rec: dict[str, Any], attacks: list[str]):
    from rich.table import Table

    t = Table(title=f"{which}: {rec['m0']} on {rec['facts']} ({rec['n_forget']} forget), floor: "
                    f"{'retrain oracle' if rec['oracle'] else 'as each module states (no oracle)'}"
                    f"; cells: M1 / floor (reading: R removal, S suppression, I inconclusive); "
                    f"recoveries 0 = M1, 1 = M0")
    for col in ("edit", "edit s", "forget acc", *attacks, "attack s"):
        t.add_column(col, justify="right")
    for name, p in rec["pairs"].items():
        if "refused" in p or "edit_error" in p:
            what = "refused" if "refused" in p else "edit crashed"
            t.add_row(name, "-", "-", f"{what} (below)", *[""] * (len(attacks) - 1), "-")
            continue
        acc = p["accuracy"]
        t.add_row(name, f"{p['edit_seconds']:.1f}",
                  f"{rec['m0_accuracy']['forget']:.0%} -> {acc['forget']:.0%}",
                  *(cell(p["attacks"].get(a)) for a in attacks), f"{p['attack_seconds']:.1f}")
    return t


# ---------------------------------------------------------------------------------------------


def run_model(which: str, edits: list[str] | None, attacks: list[str], seed: int, console,
              saved: Path | None = None, options: dict[str, dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    from workbench.errors import WorkbenchError

    load_m0, load_oracle, facts, source = load_world(which)
    names = edits or default_edits(which, load_oracle is not None)
    m0 = load_m0()
    rec: dict[str, Any] = {"m0": m0.name, "facts": source, "oracle": load_oracle is not None,
                           "n_forget": len(facts.forget), "m0_accuracy": split_accuracy(m0, facts),
                           "attacks": attacks, "pairs": {}}
    if load_oracle is not None:
        rec["oracle_accuracy"] = split_accuracy(load_oracle(), facts)
    for name in names:
        m0 = load_m0()  # fresh per pair: cold timings, no memo carried over
        oracle = load_oracle() if load_oracle is not None else None
        p: dict[str, Any] = {}
        rec["pairs"][name] = p
        t0 = time.perf_counter()
        try:
            m1, kind, info = make_edit(name, m0, facts, load_oracle, seed, saved)
        except WorkbenchError as e:
            p.update({"refused": str(e), "edit_seconds": round(time.perf_counter() - t0, 2)})
            console.print(f"[yellow]{which}/{name}: refused: {e}[/]")
            continue
        except Exception as e:  # noqa: BLE001
            p.update({"edit_error": f"{type(e).__name__}: {e}", **_crash(e)})
            console.print(f"[red]{which}/{name}: the edit crashed: {e}[/]")
            continue
        p.update({"kind": kind, "edit_seconds": round(time.perf_counter() - t0, 2), **info,
                  "attacks": {}})
        total = 0.0
        for a in attacks:
            if a == "activation_patching" and oracle is None:
                p["attacks"][a] = {"skipped": "UDS patches a retrain oracle's activations into "
                                              "M0: no oracle for this model", "seconds": 0.0}
                continue
            r = run_attack(a, m0, m1, facts, oracle, seed, (options or {}).get(a))
            p["attacks"][a] = r
            total += r["seconds"]
            status = (f"CRASH {r['error'][:100]} ({r['file']}:{r['line']})" if "error" in r
                      else f"{r['reading']}: {cell(r)}")
            console.print(f"[dim]{which}/{name}/{a}: {r['seconds']:.1f} s, {status}[/]")
        p["attack_seconds"] = round(total, 2)
        p["accuracy"] = split_accuracy(m1, facts)
        console.print(f"{which}/{name}: edit {p['edit_seconds']:.1f} s, attacks {total:.1f} s")
    secs = [p["attack_seconds"] for p in rec["pairs"].values() if "attack_seconds" in p]
    rec["summary"] = {"pairs": len(secs), "target_seconds": TARGETS[which],
                      "max_attack_seconds": max(secs, default=None),
                      "median_attack_seconds": statistics.median(secs) if secs else None,
                      "over_target": [n for n, p in rec["pairs"].items()
                                      if p.get("attack_seconds", 0) > TARGETS[which]],
                      "crashes": [f"{n}/{a}" for n, p in rec["pairs"].items()
                                  for a, r in p.get("attacks", {}).items() if "error" in r]}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--models", default="toy", help="comma list of toy, people, smollm2")
    ap.add_argument("--operators", default=None,
                    help="comma list of operators, controls (identity, output_only_suppressor) "
                         "and 'oracle' (default: toy: every registered operator, both controls "
                         "and the oracle; smollm2: " + ",".join(SMOLLM2_DEFAULT) + ")")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma list of modules")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=None, metavar="ATTACK.KEY=VALUE",
                    help="an option of one attack, a JSON value (repeatable), e.g. "
                         "quantization.bnb=true or quantization.bits=[4]")
    ap.add_argument("--edits-from", default=None, metavar="DIR",
                    help="load operators' edits saved by `bench/operators.py --save-edits DIR` "
                         "(DIR/<model>/<operator>) instead of making them again")
    args = ap.parse_args()

    import torch
    from rich.console import Console

    from probes import PROBES
    from workbench.operators import get_operator

    attacks = args.attacks.split(",")
    for a in attacks:
        PROBES[a]  # an unknown name fails before any work, listing the known ones
    options = attack_options(args.set or [], attacks)
    edits = args.operators.split(",") if args.operators else None
    for n in edits or []:
        if n not in (*CONTROLS, ORACLE):
            get_operator(n)
    torch.manual_seed(args.seed)
    console = Console(width=220)
    console.print(f"torch threads: {torch.get_num_threads()} (timings are noisy on a shared CPU)")
    results: dict[str, Any] = {}
    for which in args.models.split(","):
        saved = Path(args.edits_from) / which if args.edits_from else None
        results[which] = rec = run_model(which, edits, attacks, args.seed, console, saved,
                                         options)
        console.print(table(which, rec, attacks))
        for name, p in rec["pairs"].items():
            if "refused" in p or "edit_error" in p:
                console.print(f"{name}: {p.get('refused') or p.get('edit_error')}")
        s = rec["summary"]
        if s["pairs"]:
            console.print(f"{which}: attack seconds per pair: max {s['max_attack_seconds']:.1f}, "
                          f"median {s['median_attack_seconds']:.1f} (target "
                          f"{s['target_seconds']:.0f} s; over it: {s['over_target'] or 'none'}); "
                          f"crashes: {s['crashes'] or 'none'}")
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("attacks", vars(args), results)
    console.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
