"""`Finding`: what one analysis module measured, and how it reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

READINGS = ("removal-consistent", "suppression-signature", "inconclusive")


@dataclass
class Finding:
    """A probe's result: arrays (per layer / per fact), summary scores, a reading and its reason.

    `figure` is a plotly Figure (or None); `arrays` values are numpy arrays; `scores` are floats."""

    name: str
    reading: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    figure: Any = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, not {self.reading!r}")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe summary (arrays as lists, figure omitted)."""
        return {"name": self.name, "reading": self.reading, "reason": self.reason,
                "scores": {k: float(v) for k, v in self.scores.items()},
                "arrays": {k: np.asarray(v).tolist() for k, v in self.arrays.items()},
                "meta": self.meta, "seconds": round(self.seconds, 3)}
