"""Analysis modules: each maps a `ProbeContext` (M0, M1, facts, oracle, ...) to a `Finding`.

`PROBES` registers every module explicitly, in battery order (a module that fails to import
fails loudly); `run_battery` builds one context and hands each probe the findings of those
before it (attribution patching reads activation patching's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from probes import (
    ablation,
    attribution,
    behavior_pressure,
    clusters,
    in_context,
    linear_probes,
    logit_lens,
    membership,
    patching,
    quantization,
    relearning,
    restoration,
    signal,
)
from probes.base import READINGS, Finding, Probe, ProbeContext, ProbeSpec
from workbench.facts import FactSet
from workbench.models import Subject, check_compatible
from workbench.registry import Registry

PROBES: Registry[Probe] = Registry("analysis module", name_of=lambda p: p.name)
for _module in (behavior_pressure, logit_lens, linear_probes, clusters, signal, patching,
                attribution, restoration, relearning, quantization, ablation, in_context,
                membership):
    PROBES.register(_module.PROBE.name, _module.PROBE)


def register_probe(probe: Probe) -> Probe:
    """Add a probe (a `Probe`, e.g. a `ProbeSpec`) to the battery, after the built-in ones."""
    return PROBES.register(probe.name, probe)


def available() -> list[str]:
    """Names of the registered modules, in battery order."""
    return PROBES.names()


def get_probe(name: str) -> Callable[..., Finding]:
    """The module as a function `(m0, m1, facts, oracle=None, seed=0, progress=False,
    device=None, **options) -> Finding` (options: its thresholds and its own keywords);
    `PROBES[name]` is the `Probe` itself. An unknown name raises, listing the known ones."""
    probe = PROBES[name]

    def run(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
            seed: int = 0, progress: bool = False, device: str | None = None,
            **options: Any) -> Finding:
        return probe(ProbeContext(m0, m1, facts, oracle, seed, progress, device), **options)

    run.__name__ = run.__qualname__ = name
    return run


def run_battery(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                modules: Sequence[str] | None = None, seed: int = 0,
                progress: bool = True, device: str | None = None,
                cached: Mapping[str, Finding] | None = None,
                on_finding: Callable[[Finding], None] | None = None) -> list[Finding]:
    """Run the named modules (default: all) in order on one context and return their findings;
    each probe sees the findings of those before it in `ctx.findings`. A module in `cached` is
    not run again: its finding is reused (a resumed audit); `on_finding` sees each new one."""
    check_compatible(m0, m1)
    if oracle is not None:
        check_compatible(m0, oracle)
    probes = [PROBES[n] for n in (modules or available())]  # unknown names fail before any work
    done: dict[str, Finding] = {}
    ctx = ProbeContext(m0, m1, facts, oracle, seed, progress, device, MappingProxyType(done))
    findings = []
    for probe in probes:
        if cached is not None and probe.name in cached:
            findings.append(cached[probe.name])
        else:
            if progress:
                print(f"[probes] {probe.name} ...", flush=True)
            findings.append(probe(ctx))
            if on_finding is not None:
                on_finding(findings[-1])
        done[probe.name] = findings[-1]
    return findings


__all__ = ["PROBES", "READINGS", "Finding", "Probe", "ProbeContext", "ProbeSpec", "available",
           "get_probe", "register_probe", "run_battery"]
