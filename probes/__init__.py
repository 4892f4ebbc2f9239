"""Analysis modules: each maps (M0, M1, facts, oracle) to a `Finding`. A name registry and
`run_battery`, which runs them all (part B's patching modules too, when importable)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence

from probes.base import READINGS, Finding
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject, check_compatible

ProbeFn = Callable[..., Finding]

# name -> "module:function"; imported lazily so a missing optional module never breaks the rest.
_SPECS: dict[str, str] = {
    "behavior_pressure": "probes.behavior_pressure:behavior_pressure",
    "logit_lens": "probes.logit_lens:logit_lens",
    "linear_probes": "probes.linear_probes:linear_probes",
    "clusters": "probes.clusters:clusters",
    "signal": "probes.signal:signal",
    "activation_patching": "probes.patching:activation_patching",
    "attribution_patching": "probes.attribution:attribution_patching",
    "parameter_restoration": "probes.restoration:parameter_restoration",
}
PROBES: dict[str, ProbeFn] = {}


def register_probe(name: str, fn: ProbeFn) -> ProbeFn:
    """Add a module to the battery under `name`."""
    PROBES[name] = fn
    return fn


def _load() -> dict[str, ProbeFn]:
    for name, spec in _SPECS.items():
        if name in PROBES:
            continue
        mod, fn = spec.split(":")
        try:
            PROBES[name] = getattr(importlib.import_module(mod), fn)
        except (ModuleNotFoundError, AttributeError):
            continue  # a module not written (or installed) yet: the battery runs without it
    return PROBES


def available() -> list[str]:
    """Names of the modules that can run here, in battery order."""
    return list(_load())


def get_probe(name: str) -> ProbeFn:
    probes = _load()
    if name not in probes:
        raise WorkbenchError(f"unknown analysis module {name!r}; known: {sorted(probes)}")
    return probes[name]


def run_battery(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                modules: Sequence[str] | None = None, seed: int = 0,
                progress: bool = True) -> list[Finding]:
    """Run the named modules (default: all available) and return their findings in order."""
    check_compatible(m0, m1)
    if oracle is not None:
        check_compatible(m0, oracle)
    names = list(modules) if modules else available()
    fns = [(n, get_probe(n)) for n in names]
    findings = []
    for name, fn in fns:
        if progress:
            print(f"[probes] {name} ...", flush=True)
        t0 = time.perf_counter()
        f = fn(m0, m1, facts, oracle=oracle, seed=seed, progress=progress)
        f.seconds = f.seconds or time.perf_counter() - t0
        findings.append(f)
    return findings


__all__ = ["PROBES", "READINGS", "Finding", "available", "get_probe", "register_probe",
           "run_battery"]
