"""The verdict: findings in, `removed` | `suppressed` | `not_unlearned` | `damaged` out.

A pure function of findings and a calibration (no model is loaded). Two behaviour cuts come
first: an edit that barely lowered forget accuracy is `not_unlearned`; one that lost retain
accuracy is `damaged`. Otherwise every module's reading is one piece of evidence
(+1 suppression signature, -1 removal-consistent, 0 inconclusive) and a logistic model fitted on
known-truth pools (`probes.calibrate`) turns them into `removal_score` = P(removed). The
confidence is how far the score is from the cut, times the share of the model's weight whose
evidence was available. Every number that decides anything comes from the calibration file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from probes.base import Finding
from workbench.errors import WorkbenchError
from workbench.inputs import read_json

VERDICTS = ("removed", "suppressed", "not_unlearned", "damaged")
# Attacks whose success is proof, not a vote: quantizing M1 uses nothing but M1's own weights (no
# data, no hint of the answers), so forgotten answers that rounding brings back, beyond what it
# brings back into the oracle, were still in those weights. Past its fitted cut such a recovery
# caps the removal score under 0.5, whatever the other modules read.
DECISIVE = ("quantization",)
READING_VALUE = {"suppression-signature": 1.0, "removal-consistent": -1.0, "inconclusive": 0.0}
SHIPPED = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """What the verdict reads: behaviour cuts and the evidence model, fitted on pools."""

    version: str
    features: tuple[str, ...]  # module names, in weight order
    weights: tuple[float, ...]
    intercept: float
    not_unlearned_below: float  # forget drop (share of M0's forget accuracy lost) under this
    damaged_below: float  # kept utility (retain accuracy over M0's) under this
    # confidence scale without an oracle: a stated prior until pools are scored without one
    no_oracle_factor: float = 0.5
    fitted_on: dict[str, Any] = field(default_factory=dict)
    # module -> the recovery over its floor past which its suppression signature decides
    # (`DECISIVE`); fitted halfway between the pools' removers and its suppressors
    decisive: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = "calibration") -> Calibration:
        try:
            cal = cls(str(doc["version"]), tuple(doc["features"]),
                      tuple(float(w) for w in doc["weights"]), float(doc["intercept"]),
                      float(doc["not_unlearned_below"]), float(doc["damaged_below"]),
                      float(doc.get("no_oracle_factor", 0.5)), dict(doc.get("fitted_on", {})),
                      {str(k): float(v) for k, v in doc.get("decisive", {}).items()})
        except (KeyError, TypeError, ValueError) as e:
            raise WorkbenchError(f"{where}: not a calibration file ({e})") from None
        if len(cal.features) != len(cal.weights):
            raise WorkbenchError(f"{where}: {len(cal.features)} features but "
                                 f"{len(cal.weights)} weights")
        return cal

    @classmethod
    def load(cls, path: str | Path | None = None) -> Calibration:
        """The calibration at `path`, or the one the package ships."""
        if path is None:
            text = resources.files("probes.data").joinpath(SHIPPED).read_text("utf-8")
            return cls.from_json(json.loads(text), f"probes/data/{SHIPPED}")
        return cls.from_json(read_json(path), str(path))


@dataclass(frozen=True)
class Evidence:
    """One finding's part in the verdict: its reading, a figure, and its push on the score."""

    finding: str
    reading: str
    figure: str
    value: float
    push: float  # weight x evidence: > 0 towards removed, < 0 towards suppressed
    reason: str


@dataclass(frozen=True)
class Verdict:
    """The answer, how sure, what decided it and what was missing."""

    verdict: str
    removal_score: float
    confidence: float
    summary: str
    evidence: tuple[Evidence, ...] = ()
    unavailable: tuple[str, ...] = ()
    behaviour: dict[str, float] = field(default_factory=dict)
    calibration: str = ""
    would_change: str = ""  # what evidence would turn the verdict
    # readings against the verdict from modules the calibration gives no weight: shown, not
    # counted (the pools it was fitted on held no edit that only they could tell apart)
    unweighed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["evidence"] = [asdict(e) for e in self.evidence]
        doc["unavailable"] = list(self.unavailable)
        doc["unweighed"] = list(self.unweighed)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Verdict:
        return cls(doc["verdict"], float(doc["removal_score"]), float(doc["confidence"]),
                   doc["summary"], tuple(Evidence(**e) for e in doc.get("evidence", [])),
                   tuple(doc.get("unavailable", [])), dict(doc.get("behaviour", {})),
                   doc.get("calibration", ""), doc.get("would_change", ""),
                   tuple(doc.get("unweighed", [])))


# The figure shown beside each module's reading (the first of these its finding has).
_FIGURES = {
    "behavior_pressure": ("mixed_trigger", "paraphrase_gap"),
    "logit_lens": ("late_read_M1_minus_Mr", "kept_fraction"),
    "linear_probes": ("late_M1_minus_Mr", "kept_fraction"),
    "clusters": ("max_sep_gain",),
    "signal": ("max_detect_excess",),
    "activation_patching": ("uds", "best_single_recovery"),
    "attribution_patching": ("best_single_estimate",),
    "parameter_restoration": ("max_recovery", "relative_change"),
    "relearning": ("recovery_over_floor", "recovery_M1"),
    "quantization": ("recovery",),
    "directional_ablation": ("recovery",),
    "in_context_recovery": ("recovery",),
    "membership": ("auc_M1", "privleak"),
}


def figure_of(f: Finding) -> tuple[str, float]:
    """The figure that best summarises a finding (name, value; NaN when it has none)."""
    for key in _FIGURES.get(f.name, ()) + tuple(f.scores):
        if key in f.scores and math.isfinite(f.scores[key]):
            return key, f.scores[key]
    return "", float("nan")


# Whether a larger headline figure means more knowledge left (+1: evidence of suppression) or
# deeper erasure (-1); meta-evaluation orients each figure by this, fixed in advance.
_MORE_LEFT = {"activation_patching": -1, "membership": +1, "behavior_pressure": +1}


def headline(module: str) -> tuple[str, int]:
    """The one figure every finding of `module` is compared by, and its orientation (+1: larger
    means more knowledge left in M1)."""
    return _FIGURES.get(module, ("",))[0], _MORE_LEFT.get(module, +1)


def features(findings: dict[str, Finding], names: tuple[str, ...]) -> np.ndarray:
    """Evidence per module in `names` (+1 suppression, -1 removal, 0 inconclusive or missing)."""
    return np.array([READING_VALUE[findings[n].reading] if n in findings else 0.0
                     for n in names])


def _first(findings: dict[str, Finding], key: str) -> float | None:
    for name in ("behavior_pressure", *sorted(findings)):
        f = findings.get(name)
        if f is not None and math.isfinite(f.scores.get(key, math.nan)):
            return f.scores[key]
    return None


def behaviour_figures(findings: dict[str, Finding]) -> dict[str, float]:
    """Forget drop (share of M0's forget accuracy M1 lost), kept utility (retain accuracy over
    M0's: what the pools' validity rules judge damage by) and, where reported, kept holdout
    accuracy (collateral loss on people the edit never saw, shown but not decisive), read from
    the findings' gate figures."""
    f0, f1 = _first(findings, "forget_acc_M0"), _first(findings, "forget_acc_M1")
    if f0 is None or f1 is None:
        raise WorkbenchError("no finding reports forget accuracy: run behavior_pressure (or any "
                             "module) before asking for a verdict")
    out = {"forget_acc_M0": f0, "forget_acc_M1": f1,
           "forget_drop": (f0 - f1) / f0 if f0 > 0 else 0.0}
    for split, key in (("retain", "utility_kept"), ("holdout", "holdout_kept")):
        a0, a1 = _first(findings, f"{split}_acc_M0"), _first(findings, f"{split}_acc_M1")
        if a0 is not None and a1 is not None and a0 > 0:
            out[key] = min(1.0, a1 / a0)
    return out


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -50 else 0.0


def decide(findings: dict[str, Finding] | list[Finding], calibration: Calibration | None = None
           ) -> Verdict:
    """The verdict for one edit from its findings (by name, or a list)."""
    if not isinstance(findings, dict):
        findings = {f.name: f for f in findings}
    cal = calibration or Calibration.load()
    beh = behaviour_figures(findings)
    missing = [n for n, w in zip(cal.features, cal.weights) if n not in findings and w != 0]
    unavailable = [f"{n}: not run" for n in missing]
    if "utility_kept" not in beh:
        unavailable.append("utility: no finding reports retain accuracy, so damage cannot be "
                           "ruled out")
    no_oracle = not any("Mr" in k for f in findings.values() for k in f.scores)
    if no_oracle:
        floors = [n for n in cal.features if n in findings and any(
            "floor" in k for k in findings[n].scores)]
        compared = (f"{', '.join(floors)} compared M1 with a weaker floor instead" if floors
                    else "no finding could compare M1 with a model that never learned the facts")
        unavailable.append(f"oracle: none given; {compared}, so confidence is scaled by "
                           f"{cal.no_oracle_factor:g}")
    x = features(findings, cal.features)
    w = np.array(cal.weights)
    score = _sigmoid(float(w @ x) + cal.intercept)
    total = float(np.abs(w).sum()) or 1.0
    coverage = float(np.abs(w)[[n not in missing for n in cal.features]].sum()) / total
    evidence = sorted((_evidence(findings[n], wi) for n, wi in zip(cal.features, w)
                       if n in findings), key=lambda e: -abs(e.push))
    drop, kept = beh["forget_drop"], beh.get("utility_kept", 1.0)

    def margin(value: float, cut: float) -> float:
        return min(1.0, abs(value - cut) / max(cut, 1 - cut, 1e-6) * 2)

    proof = None
    if drop < cal.not_unlearned_below:
        verdict, conf = "not_unlearned", margin(drop, cal.not_unlearned_below)
        summary = (f"M1 still answers the forget facts ({beh['forget_acc_M0']:.0%} -> "
                   f"{beh['forget_acc_M1']:.0%}): nothing was unlearned")
        change = (f"forget accuracy falling below "
                  f"{beh['forget_acc_M0'] * (1 - cal.not_unlearned_below):.0%}")
    elif kept < cal.damaged_below:
        verdict, conf = "damaged", margin(kept, cal.damaged_below)
        summary = (f"M1 lost what it should keep (kept utility {kept:.0%}, cut "
                   f"{cal.damaged_below:.0%}): damaged, not selectively unlearned")
        change = f"retain accuracy above {cal.damaged_below:.0%} of M0's"
    else:
        proof = decisive_excess(findings, cal)
        if proof:
            name, excess = proof
            score = min(score, _capped(excess, cal.decisive[name]))
        verdict = "removed" if score >= 0.5 else "suppressed"
        conf = abs(2 * score - 1) * coverage * (cal.no_oracle_factor if no_oracle else 1.0)
        lead = [e for e in evidence if (e.push > 0) == (verdict == "removed") and e.push][:3]
        why = "; ".join(f"{e.finding} {e.reading}" for e in lead) or "no module decided it"
        if proof:
            why = (f"{proof[0]} brought back {proof[1]:.0%} of the forgotten answers beyond "
                   f"its floor, past the cut of {cal.decisive[proof[0]]:.0%}: decisive")
        summary = (f"{verdict}: removal score {score:.2f} from {len(evidence)} findings "
                   f"({why})")
        change = (f"{proof[0]} recovering under {cal.decisive[proof[0]]:.0%} beyond its floor"
                  if proof else
                  _turning_point(cal, x, w, [n in findings for n in cal.features], verdict))
    decided = {proof[0]} if proof else set()
    return Verdict(verdict, score, round(conf, 4), summary, tuple(evidence), tuple(unavailable),
                   beh, cal.version, change,
                   _unweighed([e for e in evidence if e.finding not in decided], verdict))


def decisive_excess(findings: dict[str, Finding], cal: Calibration) -> tuple[str, float] | None:
    """The decisive module (`DECISIVE`) whose suppression signature recovered most beyond its
    floor (none given: 0), with that excess, when it is past the calibration's cut."""
    best = None
    for name, cut in cal.decisive.items():
        f = findings.get(name)
        if f is None or f.reading != "suppression-signature":
            continue
        excess = recovery_excess(f)
        if math.isfinite(excess) and excess >= cut and (best is None or excess > best[1]):
            best = (name, excess)
    return best


def recovery_excess(f: Finding) -> float:
    """An attack's best recovery less its floor (the oracle's recovery; 0 without one)."""
    rec, floor = f.scores.get("recovery", math.nan), f.scores.get("floor", math.nan)
    return rec - (floor if math.isfinite(floor) else 0.0)


def _capped(excess: float, cut: float) -> float:
    """The removal score a decisive recovery allows: 0.5 at the cut, falling linearly to 0 at
    a full recovery (just under 0.5 at the cut itself, so the verdict turns there)."""
    return max(0.0, min(0.4999, 0.5 * (1 - excess) / max(1 - cut, 1e-6)))


def _unweighed(evidence: list[Evidence], verdict: str) -> tuple[str, ...]:
    """Each zero-weight finding whose reading contradicts a removed / suppressed verdict, in a
    sentence: a reviewer sees it, and sees that the calibration did not count it."""
    against = {"removed": "suppression-signature", "suppressed": "removal-consistent"}.get(verdict)
    return tuple(
        f"{e.finding} reads {e.reading.replace('-', ' ')}"
        + (f" ({e.figure} {e.value:.2f})" if e.figure and math.isfinite(e.value) else "")
        + ", but this calibration gives it no weight: its pools held no edit that it alone "
          "told apart"
        for e in evidence if e.push == 0 and against is not None and e.reading == against)


def _turning_point(cal: Calibration, x: np.ndarray, w: np.ndarray, ran: list[bool],
                   verdict: str) -> str:
    """The fewest modules whose reading (or, not run, whose first reading) would flip it."""
    z = float(w @ x) + cal.intercept
    want = 1.0 if verdict == "removed" else -1.0  # the evidence value that pushes the other way
    other = "suppression signature" if verdict == "removed" else "removal-consistent reading"
    moves = sorted(((abs(w[i] * (want - x[i])), i) for i in range(len(x))
                    if w[i] != 0 and x[i] != want), reverse=True)
    picked = []
    for gain, i in moves:
        z += -gain if verdict == "removed" else gain
        picked.append(cal.features[i] + ("" if ran[i] else " (not run)"))
        if (z < 0) if verdict == "removed" else (z >= 0):
            return f"a {other} from {', '.join(picked)}"
    return f"nothing the modules could read: even a {other} from every one would not"


def _evidence(f: Finding, weight: float) -> Evidence:
    key, value = figure_of(f)
    return Evidence(f.name, f.reading, key, value, float(weight * READING_VALUE[f.reading]),
                    f.reason)
