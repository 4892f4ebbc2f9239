"""The audit as one call, for the CLI, the dashboard and the notebooks: load the specs, check
them, (optionally unlearn first), run `probes.audit.run_audit`, render `report.html`."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from probes.audit import AuditRun, run_audit
from probes.verdict import Calibration


def audit(original: str, edited: str, facts: str, out: str | Path, oracle: str | None = None,
          tier: str = "quick", modules: Sequence[str] | None = None, seed: int = 0,
          calibration: str | Path | None = None, device: str | None = None,
          progress: bool = True) -> AuditRun:
    """Audit the checkpoint pair named by model specs (paths, saved edits, built-in or cached
    hub names) on a fact file or built-in set; write the run directory and its HTML report."""
    from probes.audit import tier_modules
    from workbench.facts import load_facts
    from workbench.models import check_compatible, load_subject

    tier_modules(tier, modules)  # an unknown tier or module fails before any model loads
    cal = Calibration.load(calibration)
    fs = load_facts(facts)
    m0 = load_subject(original, device=device)
    m1 = load_subject(edited, device=device)
    check_compatible(m0, m1)
    mr = load_subject(oracle, device=device) if oracle else None
    command = ["workbench", "audit", "--original", original, "--edited", edited, "--facts",
               facts, "--out", str(out), "--tier", tier, "--seed", str(seed)]
    command += ["--oracle", oracle] if oracle else []
    command += [x for m in modules or () for x in ("--module", m)]
    run = run_audit(m0, m1, fs, out, oracle=mr, tier=tier, modules=modules, seed=seed,
                    calibration=cal, specs={"M0": original, "M1": edited}
                    | ({"Mr": oracle} if oracle else {}),
                    command=shlex.join(command), progress=progress, device=device)
    from apps.report import render

    render(run.out)
    return run
