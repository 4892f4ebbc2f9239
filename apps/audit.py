"""The audit as one call, for the CLI, the dashboard and the notebooks: load the specs, check
them, (optionally unlearn first), run `probes.audit.run_audit`, render `report.html`."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from probes.audit import AuditRun, run_audit
from probes.verdict import Calibration

if TYPE_CHECKING:
    from workbench.facts import FactSet
    from workbench.models import Subject
    from workbench.operators import OperatorConfig


def audit(original: str, edited: str, facts: str, out: str | Path, oracle: str | None = None,
          tier: str = "quick", modules: Sequence[str] | None = None, seed: int = 0,
          calibration: str | Path | None = None, device: str | None = None,
          progress: bool = True, dtype: str | None = None) -> AuditRun:
    """Audit the checkpoint pair named by model specs (paths, saved edits, built-in or cached
    hub names) on a fact file or built-in set; write the run directory and its HTML report.
    `device` 'auto' spreads the models over every GPU; `dtype` None or 'auto' is bfloat16 on a
    GPU and float32 on the CPU (`workbench.placement`)."""
    from probes.audit import tier_modules
    from workbench.facts import load_facts
    from workbench.models import load_subject
    from workbench.placement import resolve_device, resolve_dtype

    tier_modules(tier, modules)  # an unknown tier or module fails before any model loads
    dt = resolve_dtype(dtype, resolve_device(device)[0])
    cal = Calibration.load(calibration)
    fs = load_facts(facts)
    m0 = load_subject(original, device=device, dtype=dt)
    m1 = _load_over_m0(edited, m0, device, dt)
    mr = _load_over_m0(oracle, m0, device, dt, also=m1) if oracle else None
    return audit_subjects(m0, m1, fs, out, mr, {"M0": original, "M1": edited, "Mr": oracle,
                                                "facts": facts}, tier, modules, seed, cal,
                          device, progress)


def _load_over_m0(spec: str, m0: Subject, device: str | None, dtype, also: Subject | None = None
                  ) -> Subject:
    """A model the audit only reads, loaded over `m0` and checked against it: every tensor it
    left as M0's (or as `also`'s) is held once (read over M0 where the checkpoint allows, else
    shared as soon as it loads), so auditing a few-block edit costs little more than one model."""
    from workbench.model_sharing import share_unchanged
    from workbench.models import check_compatible, load_subject

    subject = load_subject(spec, device=device, dtype=dtype, over=m0)
    check_compatible(m0, subject)
    share_unchanged(m0, subject)
    if also is not None:
        share_unchanged(also, subject)
    return subject


def audit_subjects(m0: Subject, m1: Subject, facts: FactSet, out: str | Path,
                   oracle: Subject | None, specs: dict[str, str | None], tier: str = "quick",
                   modules: Sequence[str] | None = None, seed: int = 0,
                   calibration: Calibration | None = None, device: str | None = None,
                   progress: bool = True, prelude: str = "") -> AuditRun:
    """`audit` on subjects already loaded (the dashboard keeps them in its cache): `specs` names
    where each came from (`M0`, `M1`, `Mr`, `facts`) for the manifest and the reproduction
    command, which `prelude` (a command run first, e.g. the unlearning) precedes."""
    command = ["workbench", "audit", "--original", str(specs["M0"]), "--edited",
               str(specs["M1"]), "--facts", str(specs["facts"]), "--out", str(out), "--tier",
               tier, "--seed", str(seed)]
    command += ["--oracle", str(specs["Mr"])] if oracle is not None else []
    if m0.dtype != torch.float32:  # 'auto' differs between machines: name what this run used
        command += ["--dtype", str(m0.dtype).removeprefix("torch.")]
    command += [x for m in modules or () for x in ("--module", m)]
    roles = {"M0": str(specs["M0"]), "M1": str(specs["M1"])}
    roles |= {"Mr": str(specs["Mr"])} if oracle is not None else {}
    run = run_audit(m0, m1, facts, out, oracle=oracle, tier=tier, modules=modules, seed=seed,
                    calibration=calibration, specs=roles,
                    command=(prelude + " && " if prelude else "") + shlex.join(command),
                    progress=progress, device=device)
    from apps.report import render

    render(run.out)
    return run


def unlearn_and_audit(model: str, operator: str, facts: str, out: str | Path,
                      sets: Sequence[str] = (), oracle: str | None = None, tier: str = "quick",
                      modules: Sequence[str] | None = None, seed: int = 0,
                      calibration: str | Path | None = None, device: str | None = None,
                      progress: bool = True) -> AuditRun:
    """`audit` for a model and an operator: unlearn the fact set's forget split from `model` with
    `operator` (its defaults and the `key=value` overrides in `sets`, seeded with `seed`), save
    the edit in `out/edit`, then audit it against `model`. Float32 throughout (the operator
    trains the model). Every option is checked before any model loads."""
    from probes.audit import tier_modules
    from workbench.facts import load_facts
    from workbench.models import load_subject
    from workbench.operators import make_config

    tier_modules(tier, modules)
    config = make_config(operator, list(sets), seed=seed)
    cal = Calibration.load(calibration)
    fs = load_facts(facts)
    m0 = load_subject(model, device=device)
    mr = _load_over_m0(oracle, m0, device, None) if oracle else None
    return unlearn_then_audit(m0, operator, config, fs, out, mr,
                              {"M0": model, "Mr": oracle, "facts": facts}, tier, modules, seed,
                              cal, device, progress)


def config_sets(config: OperatorConfig) -> list[str]:
    """The `--set key=value` arguments that rebuild `config` from its operator's defaults."""
    default = type(config)()
    sets = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name != "seed" and value != getattr(default, f.name):
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            sets.append(f"{f.name}={'none' if value is None else text}")
    return sets


def unlearn_then_audit(m0: Subject, operator: str, config: OperatorConfig, facts: FactSet,
                       out: str | Path, oracle: Subject | None, specs: dict[str, str | None],
                       tier: str = "quick", modules: Sequence[str] | None = None,
                       seed: int = 0, calibration: Calibration | None = None,
                       device: str | None = None, progress: bool = True) -> AuditRun:
    """Unlearn `facts`' forget split from `m0` with `operator`, then audit the edit against it.
    The edit is saved in `out/edit` and reused when its inputs (M0's weights, the facts, the
    operator and its config) match those of an earlier run there. `specs`: as `audit_subjects`
    (`M0`, `Mr`, `facts`)."""
    from workbench.edits import cached_edit
    from workbench.entities import with_entities
    from workbench.models import fingerprint
    from workbench.operators import get_operator

    out = Path(out)
    fs, _ = with_entities(facts)  # operators that read entities find them
    key = {"model": fingerprint(m0), "facts": [f.to_json() for f in fs], "operator": operator,
           "config": repr(config)}
    op = get_operator(operator)
    m1 = cached_edit(out / "edit", key, lambda: op.apply(m0, fs.forget, fs.retain, config),
                     device)
    sets = [x for s in config_sets(config) for x in ("--set", s)]
    prelude = shlex.join(["workbench", "unlearn", "--model", str(specs["M0"]), "--facts",
                          str(specs["facts"]), "--operator", operator, *sets, "--seed",
                          str(config.seed), "--out", str(out / "edit")])
    return audit_subjects(m0, m1, facts, out, oracle, specs | {"M1": str(out / "edit")}, tier,
                          modules, seed, calibration, device, progress, prelude)
