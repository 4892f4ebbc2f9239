"""An audit: one original / edited (/ oracle) pair in, a run directory with a verdict out.

The run directory is the interface every front end reads (the CLI, the app, the notebooks):

- `manifest.json`: versions, seed, tier, modules, each subject's spec and content hash
  (`workbench.models.fingerprint`), the facts' hash, the calibration version, timings;
- `findings/<module>.json`: each finding with the key of the inputs and settings it was computed
  from; an interrupted audit resumes from the findings whose key still matches;
- `behaviour.json`: accuracy per split of M0, M1 and the oracle (greedy generation);
- `verdict.json` and `report.json` (schema in the README).

Every file is written atomically. The HTML report is drawn from this directory by
`apps.report` (the layer that renders), never from models.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes import available, run_battery
from probes.base import Finding
from probes.verdict import Calibration, Verdict, decide, figure_of
from workbench.atomic import write_text
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.inputs import read_json
from workbench.models import Subject, check_compatible, fingerprint
from workbench.progress import report as report_progress

REPORT_SCHEMA = 1
# The cheap modules and one attack: quantization, the decisive one (`probes.verdict.DECISIVE`:
# rounding uses nothing but M1's weights, so what it gives back was in them; without it the
# people world's gradient edits read `removed` while 4-bit rounding returns three quarters of
# what they forgot). `full` runs every registered module.
QUICK = ("behavior_pressure", "logit_lens", "activation_patching", "parameter_restoration",
         "signal", "quantization")
TIERS = ("quick", "full")


def tier_modules(tier: str, modules: Sequence[str] | None = None) -> list[str]:
    """The modules an audit runs: `modules` if given, else the tier's (unknown names raise)."""
    from probes import PROBES

    if tier not in TIERS:
        raise WorkbenchError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    names = list(modules) if modules else list(QUICK) if tier == "quick" else available()
    for n in names:
        PROBES[n]  # noqa: B018 - raises, listing the known modules
    return names


@dataclass(frozen=True)
class AuditRun:
    """What an audit returns: the run directory, its verdict and its report document."""

    out: Path
    verdict: Verdict
    report: dict[str, Any]
    findings: dict[str, Finding]

    @classmethod
    def open(cls, out: str | Path) -> AuditRun:
        """Read a finished run directory (no model is loaded)."""
        out = Path(out)
        report = read_json(out / "report.json")
        verdict = Verdict.from_json(read_json(out / "verdict.json"))
        findings = {p.stem: Finding.from_json(read_json(p)["finding"])
                    for p in sorted((out / "findings").glob("*.json"))}
        return cls(out, verdict, report, findings)


def _facts_hash(facts: FactSet) -> str:
    blob = json.dumps([f.to_json() for f in facts], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import workbench

    return {"workbench": workbench.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def _write_json(path: Path, doc: Any) -> None:
    write_text(path, json.dumps(doc, indent=1, default=str) + "\n")


def run_audit(m0: Subject, m1: Subject, facts: FactSet, out: str | Path,
              oracle: Subject | None = None, tier: str = "quick",
              modules: Sequence[str] | None = None, seed: int = 0,
              calibration: Calibration | None = None, specs: dict[str, str] | None = None,
              command: str | None = None, progress: bool = True,
              device: str | None = None) -> AuditRun:
    """Audit the pair into `out` (created; a previous run there is resumed where its inputs
    match) and return the run. `specs` names where each subject came from (for the manifest
    and the reproduction command); `modules` overrides the tier's list."""
    t0 = time.perf_counter()
    out = Path(out)
    names = tier_modules(tier, modules)
    check_compatible(m0, m1)
    if oracle is not None:
        check_compatible(m0, oracle)
    facts.forget.require_nonempty("forget split of")
    cal = calibration or Calibration.load()
    subjects = {"M0": m0, "M1": m1} | ({"Mr": oracle} if oracle is not None else {})
    hashes = {role: fingerprint(s) for role, s in subjects.items()}
    inputs = {"subjects": hashes, "facts": _facts_hash(facts), "seed": seed}
    (out / "findings").mkdir(parents=True, exist_ok=True)
    cached, timings = {}, {}
    for name in names:
        path = out / "findings" / f"{name}.json"
        if path.exists():
            doc = read_json(path)
            if doc.get("key") == _key(inputs, name):
                cached[name] = Finding.from_json(doc["finding"])
    if progress and cached:
        print(f"[audit] resuming: {len(cached)} of {len(names)} findings already in {out}",
              flush=True)

    # progress to listeners (the dashboard): one unit per module, then one for behaviour
    pending = [n for n in names if n not in cached] + ["behaviour"]
    total = len(names) + 1
    report_progress("audit", len(cached), total, running=pending[0])

    def save(f: Finding) -> None:
        _write_json(out / "findings" / f"{f.name}.json",
                    {"key": _key(inputs, f.name), "finding": f.to_json()})
        i = pending.index(f.name)
        report_progress("audit", len(cached) + i + 1, total, module=f.name, reading=f.reading,
                        running=pending[i + 1])

    findings = {f.name: f for f in run_battery(m0, m1, facts, oracle, names, seed, progress,
                                                device, cached=cached, on_finding=save)}
    timings["findings_s"] = {n: round(f.seconds, 2) for n, f in findings.items()}
    behaviour = _behaviour(out, subjects, facts, hashes, progress)
    report_progress("audit", total, total, module="behaviour")
    verdict = decide(findings, cal)
    _write_json(out / "verdict.json", verdict.to_json())
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    manifest = {"schema": REPORT_SCHEMA, "versions": _versions(), "seed": seed, "tier": tier,
                "modules": names, "resumed": sorted(cached),
                "specs": {role: {"spec": (specs or {}).get(role, s.source), "hash": hashes[role]}
                          for role, s in subjects.items()},
                "facts": {"name": facts.name, "hash": inputs["facts"], "n": len(facts),
                          "splits": {s: len(facts.split(s)) for s in facts.splits()}},
                "calibration": cal.version, "timings": timings, "placement": _placement(m0),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(out / "manifest.json", manifest)
    report = _report(manifest, verdict, findings, behaviour, command)
    _write_json(out / "report.json", report)
    return AuditRun(out, verdict, report, findings)


def _placement(subject: Subject) -> dict[str, Any]:
    """Where the audit ran: the device, the dtype and (for a model spread over several devices
    by accelerate) its device map."""
    placed = getattr(subject.model, "hf_device_map", None)
    return {"device": str(subject.device), "dtype": str(subject.dtype).removeprefix("torch."),
            "device_map": {k: str(v) for k, v in placed.items()} if placed else None}


def _key(inputs: dict[str, Any], module: str) -> str:
    blob = json.dumps({"module": module, **inputs}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _behaviour(out: Path, subjects: dict[str, Subject], facts: FactSet,
               hashes: dict[str, str], progress: bool) -> dict[str, dict[str, float]]:
    """Greedy accuracy per split of each subject, as `workbench eval` counts it (cached in
    `behaviour.json` by hash). The teacher-forced scores are the battery's own (memoised):
    only the rows they do not already count correct are generated."""
    from probes.common import answer_table
    from workbench.behavior import greedy_correct

    path = out / "behaviour.json"
    old = read_json(path) if path.exists() else {}
    key = _key({"subjects": hashes, "facts": _facts_hash(facts)}, "behaviour")
    if old.get("key") == key:
        return old["accuracy"]
    if progress:
        print("[audit] behaviour per split ...", flush=True)
    acc: dict[str, dict[str, float]] = {}
    for role, s in subjects.items():
        acc[role] = {}
        for split in facts.splits():
            fs = facts.split(split)
            prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
            exact = answer_table(s, prompts, answers)[2]
            acc[role][split] = round(float(greedy_correct(s, prompts, answers, exact).mean()), 4)
    _write_json(path, {"key": key, "accuracy": acc})
    return acc


def _report(manifest: dict, verdict: Verdict, findings: dict[str, Finding],
            behaviour: dict, command: str | None) -> dict[str, Any]:
    rows = []
    for f in findings.values():
        key, value = figure_of(f)
        rows.append({"name": f.name, "reading": f.reading, "reason": f.reason, "figure": key,
                     "value": value, "seconds": round(f.seconds, 2)})
    return {"schema": REPORT_SCHEMA, "verdict": verdict.verdict,
            "removal_score": verdict.removal_score, "confidence": verdict.confidence,
            "summary": verdict.summary, "would_change": verdict.would_change,
            "evidence": verdict.to_json()["evidence"],
            "unavailable": list(verdict.unavailable), "unweighed": list(verdict.unweighed),
            "behaviour": behaviour,
            "behaviour_figures": verdict.behaviour, "findings": rows,
            "timings": manifest["timings"], "versions": manifest["versions"],
            "seeds": {"audit": manifest["seed"]}, "specs": manifest["specs"],
            "facts": manifest["facts"], "tier": manifest["tier"],
            "calibration": manifest["calibration"], "reproduce": command or ""}
