"""The main job's demo (`make demo`): audits on the bundled model, offline, on 2 CPU cores.

On the real-model world (SmolLM2 taught fictitious people, with its retrain oracle) it unlearns a
few of the forget people with one removal-intended operator (NPO) and one suppression-intended
operator (gated steering), audits both against the oracle, and audits the oracle itself as if
it were an edit (it must read removed). On the built-in real facts it audits one edit without
an oracle, to show what that costs in confidence. Sizes and the `quick` tier are chosen to fit
the time budget; each edit and each finding is cached under the output directory, so a second
run only re-reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apps.report import render
from probes.audit import AuditRun, run_audit
from workbench.facts import FactSet
from workbench.models import Subject

PEOPLE = 2  # forget people the demo unlearns (of the world's 10)
TIER = "quick"


@dataclass(frozen=True)
class DemoRow:
    name: str
    truth: str  # what the edit is meant to be, for the table
    run: AuditRun


def demo_facts(facts: FactSet, people: int = PEOPLE) -> FactSet:
    """The first `people` forget people, twice as many retain and unseen people, as many
    holdout people: every split of the world, scaled down."""
    keep: set[str] = set()
    for split, n in (("forget", people), ("retain", 2 * people), ("holdout", people),
                     ("unseen", 2 * people)):
        names = list(dict.fromkeys(f.entity for f in facts.split(split)))[:n]
        keep |= {f.id for f in facts.split(split) if f.entity in names}
    return FactSet(tuple(f for f in facts if f.id in keep), f"{facts.name} demo ({people} "
                   f"forget people)", meta=dict(facts.meta))


def _edit(op: str, m0: Subject, facts: FactSet, out: Path, base_key: dict, device: str | None,
          seed: int) -> Subject:
    from workbench.edits import cached_edit
    from workbench.operators import get_operator, make_config

    config = make_config(op, {}, seed=seed)
    key = base_key | {"operator": op, "config": repr(config)}
    return cached_edit(out, key, lambda: get_operator(op).apply(m0, facts.forget, facts.retain,
                                                                config), device,
                       stamp="demo_key.txt")


def run_audit_demo(out: str | Path = "runs/demo", seed: int = 0, device: str | None = None,
                   log: Callable[[str], None] = print) -> list[DemoRow]:
    """Run the demo into `out` (one run directory per audit) and return its rows."""
    from workbench.entities import with_entities
    from workbench.facts import load_facts
    from workbench.model_sharing import share_unchanged
    from workbench.models import load_subject
    from workbench.pretrained_world import build_pretrained_world

    out = Path(out)
    t0 = time.perf_counter()
    log("[demo] the real-model world (SmolLM2 taught fictitious people; built once, cached)")
    world = build_pretrained_world(progress=True)
    facts = demo_facts(world.facts())
    m0 = world.original(device=device)
    oracle = world.oracle(device=device, over=m0)  # only read from here on: shares M0's tensors
    key = {"world": world.stats.get("config_hash"), "facts": sorted(f.id for f in facts),
           "seed": seed}
    rows = []
    for op, truth in (("npo", "removal-intended"), ("steer", "suppression-intended")):
        log(f"[demo] {op}: unlearning {len(facts.forget)} facts of {PEOPLE} people")
        m1 = _edit(op, m0, facts, out / "edits" / op, key, device, seed)
        share_unchanged(m0, m1)
        rows.append(DemoRow(op, truth, _audit(m0, m1, facts, out / f"people-{op}", oracle,
                                              seed, device, log)))
    log("[demo] the oracle itself, audited as if it were an edit (it must read removed)")
    rows.append(DemoRow("oracle", "removed by construction",
                        _audit(m0, oracle, facts, out / "people-oracle", oracle, seed, device,
                               log)))
    del m0, m1, oracle  # the people world's models are done with
    log("[demo] the built-in real facts, one steering edit, no oracle")
    real, _ = with_entities(load_facts("smollm2"))
    bundled = load_subject("smollm2-135m", device=device)
    m1 = _edit("steer", bundled, real, out / "edits" / "realfacts-steer",
               {"facts": "builtin:smollm2", "seed": seed}, device, seed)
    rows.append(DemoRow("steer (no oracle)", "suppression-intended",
                        _audit(bundled, m1, real, out / "realfacts-steer", None, seed, device,
                               log)))
    log(f"[demo] done in {time.perf_counter() - t0:.0f} s")
    return rows


def _audit(m0: Subject, m1: Subject, facts: FactSet, out: Path, oracle: Subject | None,
           seed: int, device: str | None, log: Callable[[str], None]) -> AuditRun:
    log(f"[demo] auditing {m1.name} ({TIER} tier) -> {out}")
    run = run_audit(m0, m1, facts, out, oracle=oracle, tier=TIER, seed=seed, progress=True,
                    device=device, command="make demo")
    render(out)
    return run


FULL_ADDS = ("the full tier adds linear probes, clusters, attribution patching, relearning "
             "(RTT), directional ablation, in-context recovery and membership: several times the "
             "time on a CPU (`workbench audit --tier full`)")
