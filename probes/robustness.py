"""Robustness of every module's figure, and of `removal_score`, under 4-bit quantization and one
epoch of relearning: the meta-evaluation's second axis, as OpenUnlearning defines it (Dorna et
al. 2025, Eq. 2-4) and the Unlearning Depth Score's paper applies it.

A figure is robust when a benign perturbation of an edit moves it no more than the same
perturbation moves it on the retrain oracle: a figure that reads "gone" on an edit whose answers
one epoch of relearning (or 4-bit rounding) brings back faster than it brings back the oracle's
was fooled, and a figure that already saw the knowledge stays put. OpenUnlearning compares
levels of figures that are positive probabilities; ours are signed differences (M1 against the
oracle, recoveries over a floor), so both perturbations are read the same, symmetric way, on
shifts: with d = |m(P(X)) - m(X)| for the edit X and for the oracle,

    r = min(1, (d_oracle + TOLERANCE) / (d_edit + TOLERANCE)),

averaged over a pool's removed and suppressed controls, per perturbation; a module's robustness
is the harmonic mean of the two (Eq. 4). A module with no figure for a perturbed copy (its gate
found nothing unlearned: the perturbation gave the answers back) leaves that edit unread and
says how many; one with no figure for the oracle before or after (restoration cannot put M0's
weights into a model trained apart) counts the oracle's shift as 0. `removal_score` counts a
copy that answers again as knowledge fully present (its verdict is `not_unlearned`), and M1's
forget accuracy, the behavioural baseline, is always read. The perturbed models' findings are
written beside the pool's (`<pool>/robustness/<control>/<perturbation>/findings/`), resumably,
and read back without a model, like the pool itself; the unperturbed findings are the pool's
own.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes import run_battery
from probes.base import Finding
from probes.pools import PoolEntry, load_pool, read_findings, write_findings
from probes.verdict import Calibration, behaviour_figures, decide, headline
from workbench.atomic import atomic_dir
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.inputs import read_json
from workbench.models import Subject

PERTURBATIONS = ("quantization", "relearning")
# Shifts this small (figures are fractions and AUCs, mostly in [-1, 1]) count as no move, so a
# figure the oracle leaves exactly in place is not called fragile for a rounding-level wobble.
TOLERANCE = 0.02
QUANT_BITS, QUANT_GROUP = 4, 32  # the quantization attack's 4-bit RTN (llama.cpp's blocks)
TRUTHS = ("removed", "suppressed")


@torch.no_grad()
def quantized_copy(subject: Subject) -> Subject:
    """A copy whose linear weights are 4-bit RTN quantized (groups of 32) and de-quantized."""
    from workbench.rounding import quantized_weights, rtn_quantize

    out = subject.clone(source=f"{subject.source}+rtn{QUANT_BITS}")
    for p in quantized_weights(out.model).values():
        p.copy_(rtn_quantize(p, QUANT_BITS, QUANT_GROUP))
    return out


def relearned_copy(subject: Subject, forget: FactSet, seed: int = 0) -> Subject:
    """A copy fine-tuned for one epoch on the forget facts (every block, the relearning
    attack's lower learning rate: 1e-3 for a toy model, 3e-5 for a pretrained one)."""
    from probes.relearning import default_lrs
    from workbench.controls import fine_tune

    batch = 32
    return fine_tune(subject, forget, forget, {
        "params": "block", "layers": tuple(range(subject.n_layers)),
        "lr": default_lrs(subject)[0], "batch_size": batch,
        "steps": math.ceil(len(forget) / batch), "stop_forget_acc": None, "eval_every": 0},
        name="relearned", seed=seed)


def perturbed(subject: Subject, kind: str, facts: FactSet, seed: int = 0) -> Subject:
    """`subject` under one of `PERTURBATIONS` (a new subject; `subject` is not touched)."""
    if kind == "quantization":
        return quantized_copy(subject)
    if kind == "relearning":
        return relearned_copy(subject, facts.forget, seed)
    raise WorkbenchError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")


def build_robustness(pool: str | Path, modules: Sequence[str] | None = None,
                     only: Sequence[str] = (), progress: bool = True,
                     device: str | None = None) -> Path:
    """Perturb each valid removed or suppressed control of a built pool (and the oracle), score
    the perturbed models with the pool's modules, and write their findings into the pool
    (`robustness/`); resumes from what is on disk. Returns that directory."""
    from rich.progress import Progress

    from workbench.pools import PoolInputs, world_controls
    from workbench.worlds import World

    pool = Path(pool)
    doc = read_json(pool / "pool.json")
    world = World.at(Path(doc["world_root"]))
    seed = int(doc.get("seed", 0))
    modules = list(modules or doc["modules"])
    rows = {r["name"]: r for r in doc["controls"]
            if r.get("status") == "valid" and r["truth"] in TRUTHS}
    only = [*only, "oracle"] if only else []  # every shift is read against the oracle's
    unknown = sorted(set(only) - set(rows))
    if unknown:
        raise WorkbenchError(f"{pool}: {unknown} not among its valid removed or suppressed "
                             f"controls ({', '.join(rows)})")
    controls = [c for c in world_controls(world, seed) if c.name in rows
                and (not only or c.name in only)]
    if not controls:
        raise WorkbenchError(f"{pool}: no valid removed or suppressed control to perturb"
                             + (f" among {sorted(only)}" if only else ""))
    facts = world.facts()
    m0 = world.original(device=device)
    inputs = PoolInputs(world, facts, m0, world.oracle(device=device), seed)
    out = pool / "robustness"
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("robustness", total=len(controls) * len(PERTURBATIONS))
        for control in controls:
            m1 = None
            for kind in PERTURBATIONS:
                where = out / control.name / kind
                bar.update(task, description=f"{control.name} / {kind}")
                if not _done(where, modules):
                    m1 = m1 if m1 is not None else control.build(inputs)
                    x = perturbed(m1, kind, facts, seed)
                    found = run_battery(m0, x, facts, inputs.oracle, modules, seed=seed,
                                        progress=False)
                    with atomic_dir(where) as tmp:
                        write_findings(tmp / "findings", found)
                        (tmp / "perturbed.json").write_text(json.dumps(
                            {"control": control.name, "perturbation": kind,
                             "modules": modules, "seed": seed}))
                    del x
                    gc.collect()
                bar.advance(task)
            if progress:
                print(f"[robustness] {control.name} done", flush=True)
            del m1
    return out


def _done(where: Path, modules: list[str]) -> bool:
    meta = where / "perturbed.json"
    return meta.exists() and read_json(meta).get("modules") == modules


def _perturbed_findings(pool: Path, entry: PoolEntry, kind: str) -> dict[str, Finding] | None:
    fdir = pool / "robustness" / entry.name / kind / "findings"
    if not fdir.is_dir():
        return None
    return read_findings(fdir)


def _knowledge(findings: dict[str, Finding], name: str, cal: Calibration) -> float:
    """The figure oriented so that larger means more knowledge left (`removal_score`: 1 - it;
    `forget_accuracy`: M1's, the behavioural baseline every unlearning benchmark reports).
    NaN where the module had nothing to read (a perturbation that gave the answers back)."""
    if name == "removal_score":  # a perturbed edit that answers again is knowledge, fully
        v = decide(findings, cal)
        return 1.0 if v.verdict == "not_unlearned" else 1.0 - v.removal_score
    if name == "forget_accuracy":
        return behaviour_figures(findings).get("forget_acc_M1", math.nan)
    key, sign = headline(name)
    f = findings.get(name)
    return sign * f.scores.get(key, math.nan) if f is not None and key else math.nan


def ratio(d_edit: float, d_oracle: float) -> float:
    """min(1, (|d_oracle| + tol) / (|d_edit| + tol)): 1 when the edit's figure moved no more
    than the oracle's under the same perturbation, falling as it moved more."""
    return min(1.0, (abs(d_oracle) + TOLERANCE) / (abs(d_edit) + TOLERANCE))


def _ratios(pool: Path, cal: Calibration, names: list[str]) -> dict[tuple[str, str], list]:
    """(figure, perturbation) -> the ratios of one pool's perturbed edits against its oracle,
    NaN for an edit whose figure is undefined before or after."""
    entries = [e for e in load_pool(pool) if e.truth in TRUTHS]
    oracle = next((e for e in entries if e.name == "oracle"), None)
    if oracle is None:
        raise WorkbenchError(f"{pool}: the pool has no scored oracle to compare shifts with")
    after = {(e.name, k): _perturbed_findings(pool, e, k) for e in entries for k in PERTURBATIONS}
    if any(after[("oracle", k)] is None for k in PERTURBATIONS):
        raise WorkbenchError(f"{pool}: no perturbed findings of the oracle; run `workbench "
                             f"controls robustness --pool {pool}` first")
    edits = [e for e in entries if e.name != "oracle"
             and all(after[(e.name, k)] is not None for k in PERTURBATIONS)]
    out: dict[tuple[str, str], list] = {}
    for name in names:
        before = {e.name: _knowledge(e.findings, name, cal) for e in [oracle, *edits]}
        for kind in PERTURBATIONS:
            after_k = {e.name: _knowledge(after[(e.name, kind)], name, cal)
                       for e in [oracle, *edits]}
            shift = {n: after_k[n] - before[n] for n in before}
            if math.isnan(before["oracle"]) and math.isnan(after_k["oracle"]):
                shift["oracle"] = 0.0  # the module has no figure for the oracle either way
            out[(name, kind)] = [ratio(shift[e.name], shift["oracle"])
                                 if np.isfinite(shift[e.name]) and np.isfinite(shift["oracle"])
                                 else math.nan for e in edits]
    return out


def robustness(pools: Sequence[str | Path], cal: Calibration,
               names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per module, for M1's forget accuracy (the behavioural baseline) and for
    `removal_score`: robustness to each perturbation (the mean ratio over every pool's
    perturbed removed and suppressed controls, each against its own pool's oracle) and their
    harmonic mean. No model is loaded."""
    names = [*(names or cal.features), "forget_accuracy", "removal_score"]
    ratios: dict[tuple[str, str], list] = {}
    for pool in pools:
        for key, rs in _ratios(Path(pool), cal, names).items():
            ratios.setdefault(key, []).extend(rs)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {}
        for kind in PERTURBATIONS:
            rs = np.array(ratios.get((name, kind), []), dtype=float)
            ok = rs[np.isfinite(rs)]
            row[kind] = float(ok.mean()) if len(ok) else math.nan
            # n: edits read; unread: the module had no figure for the edit or its perturbed
            # copy (typically the perturbation gave the answers back: nothing left to explain)
            row[f"n_{kind}"], row[f"unread_{kind}"] = len(ok), len(rs) - len(ok)
        q, r = row["quantization"], row["relearning"]
        row["robustness"] = (2 * q * r / (q + r) if q + r > 0 else 0.0) \
            if np.isfinite(q) and np.isfinite(r) else math.nan
        out[name] = row
    return out
