"""The probe contract: a frozen `ProbeContext` in, a `Finding` out.

A probe (`Probe`) reads one context (M0, M1, optional oracle Mr, the facts, a seed, the device
they run on, and the findings of the probes that ran before it) with the reading thresholds of
its own frozen dataclass, which the finding records in `meta["thresholds"]`. A `Finding` holds
only data (arrays, scores, meta) and round-trips through JSON; figures are drawn from it outside
the probes (`apps.figures.draw`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject

READINGS = ("removal-consistent", "suppression-signature", "inconclusive")


def _jsonable(value: Any) -> Any:
    """`value` as JSON-native types (tuples -> lists, numpy scalars -> Python numbers)."""
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(value, default=default))


def _same(a: Any, b: Any) -> bool:
    """Equality of JSON-native values where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


@dataclass(eq=False)
class Finding:
    """A probe's result: arrays (per layer / per fact), summary scores, a reading and its reason.

    `arrays` values are numpy arrays, `scores` floats, `meta` JSON-native (normalised on
    construction), so `Finding.from_json(f.to_json()) == f`; equality compares arrays with
    `np.array_equal` (dtype and shape too) and NaN equals NaN."""

    name: str
    reading: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, not {self.reading!r}")
        self.scores = {k: float(v) for k, v in self.scores.items()}
        self.arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        self.meta = _jsonable(self.meta)
        self.seconds = float(self.seconds)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Finding):
            return NotImplemented
        return (self.name == other.name and self.reading == other.reading
                and self.reason == other.reason and self.seconds == other.seconds
                and _same(self.scores, other.scores) and _same(self.meta, other.meta)
                and self.arrays.keys() == other.arrays.keys()
                and all(_same_array(v, other.arrays[k]) for k, v in self.arrays.items()))

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form: each array as its dtype, shape and nested-list data."""
        return {"name": self.name, "reading": self.reading, "reason": self.reason,
                "scores": dict(self.scores),
                "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.tolist()}
                           for k, v in self.arrays.items()},
                "meta": _jsonable(self.meta), "seconds": self.seconds}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Finding:
        """The inverse of `to_json` (arrays back to numpy with their dtype and shape)."""
        arrays = {k: np.asarray(v["data"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])
                  for k, v in doc.get("arrays", {}).items()}
        return cls(doc["name"], doc["reading"], doc["reason"], dict(doc.get("scores", {})),
                   arrays, dict(doc.get("meta", {})), float(doc.get("seconds", 0.0)))


def _on(device: torch.device, want: torch.device) -> bool:
    return device.type == want.type and (want.index is None or device.index == want.index)


@dataclass(frozen=True)
class ProbeContext:
    """Everything a probe reads. `device` is where the subjects run (None: M1's); every subject
    must be on it, and probes put the tensors they make there. `findings` holds the findings of
    the probes that ran earlier in the battery, by name (a read-only view)."""

    m0: Subject
    m1: Subject
    facts: FactSet
    oracle: Subject | None = None
    seed: int = 0
    progress: bool = False
    device: torch.device | str | None = None
    findings: Mapping[str, Finding] = field(default_factory=dict)

    def __post_init__(self) -> None:
        device = torch.device(self.device) if self.device is not None else self.m1.device
        for role, s in self.subjects.items():
            if not _on(s.device, device):
                raise WorkbenchError(f"{role} ({s.name}) is on {s.device}, not {device}: load "
                                     f"every subject on the device the probes run on")
        object.__setattr__(self, "device", device)
        if not isinstance(self.findings, MappingProxyType):  # a battery passes a live view
            object.__setattr__(self, "findings", MappingProxyType(dict(self.findings)))

    @property
    def subjects(self) -> dict[str, Subject]:
        """M0, M1 and (when there is one) Mr, by role name."""
        return {"M0": self.m0, "M1": self.m1} | ({"Mr": self.oracle} if self.oracle is not None
                                                 else {})


@runtime_checkable
class Probe(Protocol):
    """An analysis module: `probe(ctx) -> Finding`, reading with a `thresholds` dataclass."""

    name: str
    thresholds: type[Any]  # a frozen dataclass of reading thresholds, all fields defaulted

    def __call__(self, ctx: ProbeContext) -> Finding: ...


@dataclass(frozen=True)
class ProbeSpec:
    """A `Probe` made of a name, a thresholds type and a function `run(ctx, thresholds, **opts)`.

    Calling it fills in the thresholds (defaults when None), records them in the finding's
    `meta["thresholds"]` and the run time in `seconds`."""

    name: str
    thresholds: type[Any]
    run: Callable[..., Finding]

    def __call__(self, ctx: ProbeContext, thresholds: Any = None, **options: Any) -> Finding:
        th = self.thresholds() if thresholds is None else thresholds
        if not isinstance(th, self.thresholds):
            raise WorkbenchError(f"{self.name}: thresholds must be a {self.thresholds.__name__}, "
                                 f"not {type(th).__name__}")
        t0 = time.perf_counter()
        finding = self.run(ctx, th, **options)
        finding.meta["thresholds"] = dataclasses.asdict(th)
        finding.seconds = time.perf_counter() - t0
        return finding
