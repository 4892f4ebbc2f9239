"""Score a known-truth pool: build each control, check it is valid, run the battery, save.

A pool directory holds `pool.json` (the world, the seed, the modules, M0's and the oracle's
accuracies, and every control with its truth, status and reason) and, per valid control,
`<name>/control.json` and `<name>/findings/<module>.json`. A control already on disk with the
same modules is reused, so an interrupted build resumes. Calibration and meta-evaluation read
only this directory (`load_pool`), never a model.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes import available, run_battery
from probes.base import Finding
from workbench.atomic import atomic_dir, write_text
from workbench.errors import WorkbenchError
from workbench.inputs import read_json
from workbench.pools import Control, PoolInputs, behaviour, check_validity, world_controls
from workbench.worlds import World

POOL_VERSION = 1


@dataclass(frozen=True)
class PoolEntry:
    """One valid, scored control of a pool: its truth and its findings by module name."""

    name: str
    kind: str
    truth: str
    findings: dict[str, Finding]
    accuracy: dict[str, float]
    world: str = ""


def read_findings(fdir: Path) -> dict[str, Finding]:
    """Module name -> finding, for each `<module>.json` in `fdir` (none when it is missing)."""
    return {p.stem: Finding.from_json(read_json(p)) for p in sorted(fdir.glob("*.json"))}


def write_findings(fdir: Path, findings: Sequence[Finding]) -> None:
    """Each finding as `fdir/<module>.json` (`fdir` is made; callers write inside atomic_dir)."""
    fdir.mkdir()
    for f in findings:
        (fdir / f"{f.name}.json").write_text(json.dumps(f.to_json()))


def _confirmed(control: Control, findings: dict[str, Finding]) -> str | None:
    """An empirical suppressor counts only where relearning brings the facts back."""
    if not control.empirical:
        return None
    rel = findings.get("relearning")
    if rel is None or rel.reading != "suppression-signature":
        return ("relearning did not confirm it is a suppressor "
                f"({rel.reading if rel else 'relearning not run'})")
    return None


def build_pool(world: World, out: str | Path, controls: Sequence[Control] | None = None,
               modules: Sequence[str] | None = None, seed: int = 0, only: Sequence[str] = (),
               progress: bool = True, device: str | None = None) -> dict[str, Any]:
    """Build, validate and score every control of `world` into `out`; return `pool.json`.

    `seed` seeds the controls and the battery; a control already in `out` is reused when it was
    built with the same seed and scored with the same modules; one scored with other modules is
    rebuilt and scored with the new ones only, its findings of the rest kept."""
    from rich.progress import Progress

    out = Path(out)
    modules = list(modules or available())
    controls = list(controls if controls is not None else world_controls(world, seed))
    if only:
        unknown = sorted(set(only) - {c.name for c in controls})
        if unknown:
            raise WorkbenchError(f"unknown control(s) {unknown}; known: "
                                 f"{', '.join(c.name for c in controls)}")
        controls = [c for c in controls if c.name in only]
    facts = world.facts()
    inputs = PoolInputs(world, facts, world.original(device=device),
                        world.oracle(device=device), seed)
    ref = {"M0": behaviour(inputs.m0, facts), "oracle": behaviour(inputs.oracle, facts)}
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("controls", total=len(controls))
        for control in controls:
            bar.update(task, description=f"control {control.name}")
            rows.append(_score(control, inputs, ref, modules, out / control.name, progress))
            bar.advance(task)
            if progress:
                r = rows[-1]
                print(f"[pool] {control.name:26s} {r['truth']:13s} {r['status']:8s} "
                      f"{r.get('reason') or ''}", flush=True)
    doc = {"version": POOL_VERSION, "world": world.name, "world_root": str(world.root),
           "world_seed": world.stats.get("seed"), "seed": seed, "modules": modules,
           "accuracy": ref, "controls": rows}
    write_text(out / "pool.json", json.dumps(doc, indent=1))
    return doc


def _score(control: Control, inputs: PoolInputs, ref: dict, modules: list[str], where: Path,
           progress: bool) -> dict[str, Any]:
    done = where / "control.json"
    findings: dict[str, Finding] = {}
    if done.exists():
        row = read_json(done)
        if row.get("seed", 0) == inputs.seed and (row.get("modules") == modules
                                                  or row["status"] == "dropped"):
            return row
        if row.get("seed", 0) == inputs.seed and row["status"] == "valid":
            # scored before with other modules: keep those findings, score only what is new
            findings = {n: f for n, f in read_findings(where / "findings").items()
                        if n in modules}
    t0 = time.perf_counter()
    try:
        m1 = control.build(inputs)
    except WorkbenchError as e:  # this world cannot host the control: dropped, never scored
        row = {"name": control.name, "kind": control.kind, "truth": control.truth,
               "what": control.what, "empirical": control.empirical, "seed": inputs.seed,
               "modules": modules, "status": "dropped", "reason": f"cannot be built here: {e}"}
        with atomic_dir(where) as tmp:
            (tmp / "control.json").write_text(json.dumps(row, indent=1))
        return row
    t_build = time.perf_counter() - t0
    acc = behaviour(m1, inputs.facts)
    row = {"name": control.name, "kind": control.kind, "truth": control.truth,
           "what": control.what, "empirical": control.empirical, "seed": inputs.seed,
           "accuracy": acc,
           "build_seconds": round(t_build, 2), "modules": modules}
    reason = check_validity(control.truth, acc, ref["M0"], ref["oracle"])
    if reason is None:
        t1 = time.perf_counter()
        for f in run_battery(inputs.m0, m1, inputs.facts, inputs.oracle, modules,
                             seed=inputs.seed, progress=False, cached=findings):
            findings[f.name] = f
        row["battery_seconds"] = round(time.perf_counter() - t1, 2)
        reason = _confirmed(control, findings)
    row |= {"status": "dropped" if reason else "valid", "reason": reason}
    with atomic_dir(where) as tmp:
        write_findings(tmp / "findings", list(findings.values()))
        (tmp / "control.json").write_text(json.dumps(row, indent=1))
    del m1
    gc.collect()
    return row


def load_pool(path: str | Path) -> list[PoolEntry]:
    """The valid controls of a built pool, with their findings (no model is loaded)."""
    path = Path(path)
    doc = read_json(path / "pool.json")
    entries = []
    for row in doc.get("controls", []):
        if row.get("status") != "valid":
            continue
        fdir = path / row["name"] / "findings"
        findings = read_findings(fdir)
        entries.append(PoolEntry(row["name"], row["kind"], row["truth"], findings,
                                 row["accuracy"], f"{doc['world']}/seed{doc.get('world_seed')}"))
    if not entries:
        raise WorkbenchError(f"{path}: the pool has no valid control")
    return entries
