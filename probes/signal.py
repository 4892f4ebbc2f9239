"""Unlearning-signal detection: does M1 carry a "this is forget content" signal it gates on?

(a) Mixed-prompt drag: how far a retain question's activation moves toward the forget centroid
    when a stated forget fact precedes it (projection on the retain->forget centroid direction, in
    pooled spreads), M1 minus M0.
(b) Detector: cross-validated accuracy (grouped by entity) of a linear classifier separating
    forget from holdout inputs, per layer, in M1 versus M0 and Mr; it only counts when forget is
    also separable from never-seen (`unseen`) inputs, since a removal makes forget look unseen.
(c) Norm fingerprint: forget-input norms inflated relative to M0 while retain norms are not
    (what RMU leaves behind).
Any of the three firing means M1 recognises forget inputs: a suppression signature.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import GateThresholds, default_layers, gate, mixed_prompts, resid
from workbench.facts import FactSet
from workbench.models import Subject

CV_FOLDS = 5


@dataclass(frozen=True)
class SignalThresholds(GateThresholds):
    """Reading thresholds of the unlearning-signal detection."""

    # extra drag toward the forget centroid, in pooled spreads
    drag_min: float = 0.5
    # detector accuracy gained over M0 (and Mr); forget-vs-unseen must also exceed 0.5 + this
    det_min: float = 0.15
    # forget-norm inflation beyond retain's, as a log ratio
    norm_min: float = math.log(1.5)


def _detector(a: np.ndarray, b: np.ndarray, ga: list[str], gb: list[str], seed: int) -> float:
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    groups = np.array(ga + gb)
    k = min(CV_FOLDS, len(set(groups)))
    if k < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300,
                                                             random_state=seed))
    with warnings.catch_warnings(), threadpool_limits(1):  # small fits: see linear_probes
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(cross_val_score(clf, x, y, groups=groups, cv=GroupKFold(k)).mean())


def _drag(f: np.ndarray, r: np.ndarray, plain: np.ndarray, mixed: np.ndarray) -> float:
    u = f.mean(0) - r.mean(0)
    norm = np.linalg.norm(u)
    if norm == 0:
        return 0.0
    spread = np.sqrt((((f - f.mean(0)) ** 2).sum(1).mean() + ((r - r.mean(0)) ** 2).sum(1).mean())
                     / 2)
    return float(((mixed - plain) @ (u / norm)).mean() / spread)


def _signal(ctx: ProbeContext, th: SignalThresholds) -> Finding:
    m0, m1, facts, oracle, seed = ctx.m0, ctx.m1, ctx.facts, ctx.oracle, ctx.seed
    g = gate(m0, m1, facts, th)
    layers = default_layers(m0)
    forget, retain, holdout, unseen = facts.forget, facts.retain, facts.holdout, facts.unseen
    questions = retain if len(retain) else holdout
    mixed_p, _, q_idx = mixed_prompts(m0.tokenizer, forget, questions, seed)
    q_prompts = [questions[i].prompt for i in q_idx]
    subjects = ctx.subjects
    ent = {s: [f.entity or f.id for f in fs] for s, fs in
           (("forget", forget), ("holdout", holdout), ("unseen", unseen))}
    arrays: dict[str, np.ndarray] = {}
    for name, m in subjects.items():
        a = {s: resid(m, [f.prompt for f in fs], layers) for s, fs in
             (("forget", forget), ("retain", questions), ("holdout", holdout), ("unseen", unseen))
             if len(fs) >= 2}
        plain, mixed = resid(m, q_prompts, layers), resid(m, mixed_p, layers)
        n = range(len(layers))
        arrays[f"drag_{name}"] = np.array([_drag(a["forget"][i], a["retain"][i], plain[i],
                                                 mixed[i]) for i in n])
        if "holdout" in a:
            arrays[f"detect_fh_{name}"] = np.array([_detector(
                a["forget"][i], a["holdout"][i], ent["forget"], ent["holdout"], seed) for i in n])
        if "unseen" in a and name in ("M0", "M1"):
            arrays[f"detect_fu_{name}"] = np.array([_detector(
                a["forget"][i], a["unseen"][i], ent["forget"], ent["unseen"], seed) for i in n])
        arrays[f"norm_forget_{name}"] = np.linalg.norm(a["forget"], axis=-1).mean(1)
        arrays[f"norm_retain_{name}"] = np.linalg.norm(a["retain"], axis=-1).mean(1)
    refs = [r for r in ("M0", "Mr") if r in subjects]

    def excess(key: str) -> np.ndarray:
        return arrays[f"{key}_M1"] - np.max([arrays[f"{key}_{r}"] for r in refs], axis=0)

    def inflation(r: str) -> np.ndarray:
        return (np.log(arrays["norm_forget_M1"] / arrays[f"norm_forget_{r}"])
                - np.log(arrays["norm_retain_M1"] / arrays[f"norm_retain_{r}"]))

    drag = excess("drag")
    det = excess("detect_fh") if "detect_fh_M1" in arrays else np.zeros(len(layers))
    if "detect_fu_M1" in arrays:
        det = np.where(arrays["detect_fu_M1"] > 0.5 + th.det_min, det, 0.0)
    norm = np.min([inflation(r) for r in refs], axis=0)
    arrays |= {"drag_excess": drag, "detect_excess": det, "norm_inflation": norm}
    scores = {"max_drag_excess": float(drag.max()), "max_detect_excess": float(det.max()),
              "max_norm_inflation": float(norm.max())}
    for name in subjects:
        if f"detect_fh_{name}" in arrays:
            scores[f"max_detect_fh_{name}"] = float(np.nanmax(arrays[f"detect_fh_{name}"]))
    if "detect_fu_M1" in arrays:
        for name in ("M0", "M1"):
            scores[f"late_detect_fu_{name}"] = float(
                np.nanmax(arrays[f"detect_fu_{name}"][len(layers) // 2:]))
    reading, reason = _read(th, g.blocker(), scores, oracle)
    return Finding("signal", reading, reason, scores, arrays,
                   meta={"layers": layers, "n_mixed": len(mixed_p), "seed": seed})


PROBE = ProbeSpec("signal", SignalThresholds, _signal)


def signal(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
           seed: int = 0, progress: bool = False, device: str | None = None,
           thresholds: SignalThresholds | None = None) -> Finding:
    """Drag, detector and norm fingerprint per layer for M0, M1 (Mr); see the module doc."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds)


def _read(th: SignalThresholds, blocker, s, oracle) -> tuple[str, str]:
    if blocker:
        return "inconclusive", blocker
    fired = []
    if s["max_drag_excess"] > th.drag_min:
        fired.append(f"forget context drags retain activations toward the forget cluster "
                     f"(+{s['max_drag_excess']:.2f} spreads)")
    if s["max_detect_excess"] > th.det_min:
        fired.append(f"a linear detector separates forget from holdout inputs "
                     f"(+{s['max_detect_excess']:.0%} over the reference)")
    if s["max_norm_inflation"] > th.norm_min:
        fired.append(f"forget-input norms inflated x{np.exp(s['max_norm_inflation']):.1f}")
    if fired:
        return "suppression-signature", "; ".join(fired)
    if ("late_detect_fu_M1" in s and s["late_detect_fu_M1"] <= 0.5 + th.det_min
            < s["late_detect_fu_M0"]):
        return "removal-consistent", ("no forget signal, and forget inputs are indistinguishable "
                                      "from never-seen ones in M1's late layers")
    why = " (matches the retrain oracle)" if oracle is not None else ""
    return "inconclusive", f"no unlearning signal in M1's internals{why}"
