"""Fit the verdict's calibration on known-truth pools, and judge a calibration on held-out pools.

`fit` reads scored pools (`probes.pools.load_pool`): the behaviour cuts sit halfway between the
classes they separate, so does each decisive attack's recovery cut (`probes.verdict.DECISIVE`),
and the evidence model is an L2 logistic regression (scikit-learn) of removed against
suppressed on the modules' readings (its L2 strength chosen by leave-one-out on the same pool),
whose decision boundary is then moved to sit halfway between the two classes' evidence too (the
intercept), so that a removal score of 0.5 is the middle of the gap the pool leaves, not
wherever the regularised fit put it. `evaluate` applies a
calibration to pools it never saw: the confusion matrix, verdict accuracy, and the ROC AUC of
`removal_score` between removers and suppressors. `faithfulness` is the meta-evaluation's
per-module AUC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from probes.pools import PoolEntry
from probes.verdict import (
    DECISIVE,
    VERDICTS,
    Calibration,
    behaviour_figures,
    decide,
    features,
    headline,
    recovery_excess,
)
from workbench.errors import WorkbenchError

# Inverse L2 strengths tried for the evidence model; `fit` keeps the one with the fewest
# leave-one-out errors on its own pool (ties: the strongest regularisation). Readings are in
# {-1, 0, 1}, so the weights stay O(1) to O(10).
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def _cut(below: Sequence[float], above: Sequence[float], what: str) -> float:
    """Halfway between the largest of `below` and the smallest of `above` (they must separate)."""
    if not below or not above:
        raise WorkbenchError(f"calibration needs pool controls on both sides of the {what} cut")
    lo, hi = max(below), min(above)
    if lo >= hi:
        raise WorkbenchError(f"the pools do not separate on {what}: {lo:.3f} >= {hi:.3f}")
    return (lo + hi) / 2


def _signed_fit(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Logistic-regression weights where a suppression reading can only lower the removal score.

    No intercept here: the weights say how much each reading counts, and `_boundary` places the
    cut afterwards from where the pool's two classes lie, not from the pool's mix. A
    module whose fitted weight comes out with the wrong sign (its suppression reading would push
    towards `removed`, an artefact of a small pool) is given weight 0 and the rest refitted;
    scikit-learn has no sign-constrained logistic regression, hence this loop."""
    from sklearn.linear_model import LogisticRegression

    keep = np.ones(x.shape[1], dtype=bool)
    w = np.zeros(x.shape[1])
    while keep.any():
        lr = LogisticRegression(C=c, fit_intercept=False, max_iter=1000).fit(x[:, keep], y)
        w = np.zeros(x.shape[1])
        w[keep] = lr.coef_[0]
        if (w <= 0).all():
            break
        keep &= w <= 0
    return w


def _boundary(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """The intercept that puts the decision boundary halfway between the suppressors' largest and
    the removers' smallest evidence `x @ w` (0 when the pool's evidence does not separate them)."""
    z = x @ w
    sup, rem = z[y == 0], z[y == 1]
    if not len(sup) or not len(rem) or sup.max() >= rem.min():
        return 0.0
    return -float(sup.max() + rem.min()) / 2


def _decisive_cuts(pair: Sequence[PoolEntry]) -> dict[str, float]:
    """Per `DECISIVE` attack: halfway between the most any remover recovered beyond the floor
    and the least any suppressor it caught (read a suppression signature) did. None for an
    attack that caught no suppressor of the pools (nothing to fit it on), or whose removers
    and suppressors overlap (then it is only a vote)."""
    cuts = {}
    for name in DECISIVE:
        ex = {t: [x for e in pair if e.truth == t and name in e.findings
                  and (t == "removed" or e.findings[name].reading == "suppression-signature")
                  and np.isfinite(x := recovery_excess(e.findings[name]))]
              for t in ("removed", "suppressed")}
        if ex["removed"] and ex["suppressed"] and max(ex["removed"]) < min(ex["suppressed"]):
            cuts[name] = round((max(ex["removed"]) + min(ex["suppressed"])) / 2, 6)
    return cuts


def _loo_errors(x: np.ndarray, y: np.ndarray, c: float) -> int:
    """Removers and suppressors the evidence model misreads when each is left out of its fit."""
    wrong = 0
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        if len(set(y[rest])) < 2:
            continue
        w = _signed_fit(x[rest], y[rest], c)
        wrong += int((float(x[i] @ w) + _boundary(x[rest], y[rest], w) >= 0) != bool(y[i]))
    return wrong


def _choose_c(x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, int]]:
    """The L2 strength with the fewest leave-one-out errors (ties: the smallest C)."""
    errors = {c: _loo_errors(x, y, c) for c in C_GRID}
    best = min(C_GRID, key=lambda c: (errors[c], c))
    return best, {f"{c:g}": n for c, n in errors.items()}


def fit(entries: Sequence[PoolEntry], version: str | None = None,
        modules: Sequence[str] | None = None) -> Calibration:
    """A calibration fitted on `entries` (every truth must be represented)."""
    truths = {e.truth for e in entries}
    if not set(VERDICTS) <= truths:
        raise WorkbenchError(f"the pools lack {sorted(set(VERDICTS) - truths)} controls")
    names = tuple(modules or sorted({n for e in entries for n in e.findings}))
    beh = {e.name: behaviour_figures(e.findings) for e in entries}
    unlearned = [e for e in entries if e.truth != "not_unlearned"]
    drop_cut = _cut([beh[e.name]["forget_drop"] for e in entries if e.truth == "not_unlearned"],
                    [beh[e.name]["forget_drop"] for e in unlearned], "forget drop")
    kept_cut = _cut([beh[e.name].get("utility_kept", 1.0) for e in unlearned
                     if e.truth == "damaged"],
                    [beh[e.name].get("utility_kept", 1.0) for e in unlearned
                     if e.truth != "damaged"], "kept utility")
    pair = [e for e in entries if e.truth in ("removed", "suppressed")]
    x = np.stack([features(e.findings, names) for e in pair])
    y = np.array([e.truth == "removed" for e in pair], dtype=int)
    c, loo = _choose_c(x, y)
    weights = _signed_fit(x, y, c)
    intercept = _boundary(x, y, weights)
    worlds = sorted({e.world for e in entries})
    stamp = dt.date.today().isoformat()
    return Calibration(
        version=version or f"1+{'+'.join(worlds)}+{stamp}", features=names,
        weights=tuple(round(float(w), 6) for w in weights),
        intercept=round(float(intercept), 6), not_unlearned_below=round(drop_cut, 6),
        damaged_below=round(kept_cut, 6), decisive=_decisive_cuts(pair),
        fitted_on={"pools": worlds, "n_controls": len(entries),
                   "by_truth": {t: sum(e.truth == t for e in entries) for t in VERDICTS},
                   "controls": [e.name for e in entries], "date": stamp,
                   "C": c, "loo_errors_by_C": loo,
                   "no_oracle_factor": "a stated prior: no pool was scored without its oracle"})


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """ROC AUC that a `pos` value exceeds a `neg` one (ties count half); NaN if either is empty."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def evaluate(entries: Sequence[PoolEntry], cal: Calibration) -> dict[str, Any]:
    """Verdicts on pools `cal` never saw: rows, confusion matrix, accuracy, removal-score AUC."""
    rows = []
    for e in entries:
        v = decide(e.findings, cal)
        rows.append({"control": e.name, "kind": e.kind, "world": e.world, "truth": e.truth,
                     "verdict": v.verdict, "removal_score": round(v.removal_score, 4),
                     "confidence": v.confidence, "right": v.verdict == e.truth})
    confusion = {t: {v: sum(r["truth"] == t and r["verdict"] == v for r in rows)
                     for v in VERDICTS} for t in VERDICTS}
    score = {t: [r["removal_score"] for r in rows if r["truth"] == t]
             for t in ("removed", "suppressed")}
    return {"calibration": cal.version, "n": len(rows),
            "accuracy": float(np.mean([r["right"] for r in rows])) if rows else float("nan"),
            "removal_auc": auc(score["removed"], score["suppressed"]),
            "confusion": confusion, "rows": rows}


def faithfulness(entries: Sequence[PoolEntry], cal: Calibration) -> dict[str, dict[str, Any]]:
    """Per module (and for `removal_score`): the AUC with which its evidence tells removers from
    suppressors on `entries` (UDS's faithfulness), from its reading and from its figure."""
    pair = [e for e in entries if e.truth in ("removed", "suppressed")]
    out: dict[str, dict[str, Any]] = {}
    for name in cal.features:
        have = [e for e in pair if name in e.findings]
        reading = {t: [-features({name: e.findings[name]}, (name,))[0] for e in have
                       if e.truth == t] for t in ("removed", "suppressed")}
        out[name] = {"n": len(have), "reading_auc": auc(reading["removed"],
                                                        reading["suppressed"])}
        key, more_left = headline(name)
        vals = {t: [v for e in have if e.truth == t
                    and np.isfinite(v := e.findings[name].scores.get(key, np.nan))]
                for t in ("removed", "suppressed")}
        # oriented in advance (larger = more left means suppressors should score higher)
        a = auc(vals["suppressed"], vals["removed"]) if more_left > 0 else \
            auc(vals["removed"], vals["suppressed"])
        out[name] |= {"figure": key, "n_figure": sum(map(len, vals.values())), "figure_auc": a}
    ev = evaluate(pair, cal)
    out["removal_score"] = {"n": len(pair), "reading_auc": ev["removal_auc"],
                            "figure": "removal_score", "n_figure": len(pair),
                            "figure_auc": ev["removal_auc"]}
    return out
