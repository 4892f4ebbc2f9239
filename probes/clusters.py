"""Representation clusters: does M1 set forget inputs apart from everything else?

Per layer and model: each split's centroid and spread (RMS distance to the centroid) of the
last-prompt-token residual, separations between splits in units of their pooled spread, the
silhouette of the forget points, and linear CKA of M0 vs M1 on forget and on retain. An edit that
*recognises* forget inputs pulls their cluster away from holdout (beyond M0, and beyond Mr); a
removal leaves forget inputs looking like never-seen ones (`unseen`), as the oracle does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import silhouette_samples

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import GateThresholds, default_layers, gate, resid
from workbench.facts import FactSet
from workbench.models import Subject


@dataclass(frozen=True)
class ClustersThresholds(GateThresholds):
    """Reading thresholds of the cluster geometry."""

    # forget-vs-holdout separation gained over M0 (and Mr), in pooled spreads: a forget cluster
    sep_gain: float = 0.5
    # forget "looks unseen" when its separation from unseen is under this fraction of M0's
    unseen_near: float = 0.5
    # CKA of M0 vs M1 on forget above this at every layer: M1's representations are M0's
    same_cka: float = 0.99


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two [n, d] activation sets over the same inputs (hand-written: two lines of
    linear algebra; no installed library exposes it)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    num = np.linalg.norm(y.T @ x) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else float("nan")


def _sep(a: np.ndarray, b: np.ndarray) -> float:
    spread = np.sqrt((((a - a.mean(0)) ** 2).sum(1).mean() + ((b - b.mean(0)) ** 2).sum(1).mean())
                     / 2)
    return float(np.linalg.norm(a.mean(0) - b.mean(0)) / spread) if spread > 0 else 0.0


def _stats(acts: dict[str, np.ndarray], n_layers: int) -> dict[str, np.ndarray]:
    splits = list(acts)
    out: dict[str, np.ndarray] = {}
    for i, a in enumerate(splits):
        out[f"spread_{a}"] = np.array([np.sqrt(((acts[a][L] - acts[a][L].mean(0)) ** 2)
                                               .sum(1).mean()) for L in range(n_layers)])
        for b in splits[i + 1:]:
            out[f"sep_{a}_{b}"] = np.array([_sep(acts[a][L], acts[b][L])
                                            for L in range(n_layers)])
    labels = np.concatenate([[s] * acts[s].shape[1] for s in splits])
    is_f = labels == "forget"
    out["silhouette_forget"] = np.array([
        silhouette_samples(np.concatenate([acts[s][L] for s in splits]), labels)[is_f].mean()
        for L in range(n_layers)])
    return out


def _clusters(ctx: ProbeContext, th: ClustersThresholds) -> Finding:
    m0, m1, facts, oracle = ctx.m0, ctx.m1, ctx.facts, ctx.oracle
    g = gate(m0, m1, facts, th)
    layers = default_layers(m0)
    splits = [s for s in facts.splits() if len(facts.split(s)) >= 2]
    subjects = ctx.subjects
    acts = {name: {s: resid(m, [f.prompt for f in facts.split(s)], layers) for s in splits}
            for name, m in subjects.items()}
    stats = {name: _stats(a, len(layers)) for name, a in acts.items()}
    arrays = {f"{k}_{name}": v for name, st in stats.items() for k, v in st.items()}
    for other in [n for n in subjects if n != "M0"]:
        for s in ("forget", "retain"):
            if s in splits:
                arrays[f"cka_{s}_M0_{other}"] = np.array(
                    [linear_cka(acts["M0"][s][i], acts[other][s][i]) for i in range(len(layers))])
    fh = {n: st.get("sep_forget_holdout", np.zeros(len(layers))) for n, st in stats.items()}
    ref = np.maximum(fh["M0"], fh["Mr"]) if oracle is not None else fh["M0"]
    gain = fh["M1"] - ref
    fu = {n: st.get("sep_forget_unseen") for n, st in stats.items()}
    unseen_like = (fu["M1"] < th.unseen_near * fu["M0"]) if fu["M1"] is not None else None
    recognised = gain > th.sep_gain
    if unseen_like is not None:
        recognised &= ~unseen_like
    scores = {"max_sep_gain": float(gain.max()), "max_sep_forget_holdout_M1": float(fh["M1"].max()),
              "max_sep_forget_holdout_M0": float(fh["M0"].max()),
              "min_cka_forget": float(arrays["cka_forget_M0_M1"].min()),
              "min_cka_retain": float(arrays.get("cka_retain_M0_M1", np.array([np.nan])).min())}
    if unseen_like is not None:
        scores["late_unseen_like_fraction"] = float(unseen_like[len(layers) // 2:].mean())
    if oracle is not None:
        scores["max_sep_forget_holdout_Mr"] = float(fh["Mr"].max())
    reading, reason = _read(th, g.blocker(), recognised, unseen_like, gain, scores, layers,
                            oracle, fh)
    return Finding("clusters", reading, reason, scores, arrays,
                   meta={"layers": layers, "splits": splits, "seed": ctx.seed})


PROBE = ProbeSpec("clusters", ClustersThresholds, _clusters)


def clusters(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
             seed: int = 0, progress: bool = False, device: str | None = None,
             thresholds: ClustersThresholds | None = None) -> Finding:
    """Cluster geometry of forget / retain / holdout (/ unseen) in M0, M1 (Mr), and CKA."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds)


def _read(th: ClustersThresholds, blocker, recognised, unseen_like, gain, s, layers, oracle,
          fh) -> tuple[str, str]:
    if blocker:
        return "inconclusive", blocker
    if recognised.any():
        L = layers[int(np.argmax(np.where(recognised, gain, -np.inf)))]
        return "suppression-signature", (f"M1 pulls forget inputs into their own cluster (layer "
                                         f"{L}: +{gain.max():.2f} spreads beyond the reference)")
    if s["min_cka_forget"] > th.same_cka:
        return "inconclusive", (f"M1's forget representations are M0's (CKA > {th.same_cka} at "
                                "every layer): no recognition inside; any suppression is "
                                "downstream")
    half = len(layers) // 2
    if unseen_like is not None and unseen_like[half:].all():
        return "removal-consistent", "forget inputs now sit with never-seen ones in M1's late layers"
    if oracle is not None and np.all(np.abs(fh["M1"] - fh["Mr"]) < th.sep_gain):
        return "removal-consistent", "forget cluster geometry matches the retrain oracle's"
    return "inconclusive", "no forget-specific cluster in M1, and no match to a removal reference"
