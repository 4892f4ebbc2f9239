"""Linear probes: can the forget answers still be decoded from M1's hidden states?

What the probe learns: at each layer, a multiclass logistic regression maps the last-prompt-token
residual of a fact's prompt to its answer value (e.g. " Lisbon"), trained on the retain and
holdout facts (people the edit never targeted) and tested on the forget facts (people it did).
It therefore decodes an attribute of a person from the representation of the question, and it
can only succeed on forget facts if the model still computes their answers internally. Three
readings per layer: M0's probe on M0 (baseline), M0's probe on M1 (transfer: same directions),
and a probe refit on M1's own activations (fresh: any linear code). The same for Mr. The
training split is cross-validated (grouped by entity) to report how well probes work at all.
"""

from __future__ import annotations

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
from probes.common import ReadoutThresholds, _memo, default_layers, gate, late, resid
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject

C = 1.0  # L2 strength; with standardised features this works across the toy and SmolLM2 sizes
MAX_ITER = 300
CV_FOLDS = 5


@dataclass(frozen=True)
class LinearProbesThresholds(ReadoutThresholds):
    """Reading thresholds of the linear probes (on late-layer decoding accuracy above chance)."""


def _probe(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER,
                                                              random_state=seed))


def _label(f) -> str:
    return f"{f.relation or ''}|{f.answer.strip().lower()}"


def _splits(facts: FactSet) -> tuple[FactSet, FactSet]:
    train = facts.retain + facts.holdout
    seen = {_label(f) for f in train}
    test = FactSet(tuple(f for f in facts.forget if _label(f) in seen), "forget-decodable")
    if len(train) < 10 or len({_label(f) for f in train}) < 2:
        raise WorkbenchError("linear probes need at least 10 retain+holdout facts with 2+ answers")
    if not len(test):
        raise WorkbenchError("no forget fact's answer value occurs among retain/holdout facts: "
                             "a probe cannot decode it")
    return train, test


def _chance(train: FactSet, test: FactSet) -> float:
    values: dict[str, set[str]] = {}
    for f in train:
        values.setdefault(f.relation or "", set()).add(_label(f))
    return float(np.mean([1 / len(values.get(f.relation or "", {0})) for f in test]))


def _m0_probes(x_tr: np.ndarray, y_tr: np.ndarray, groups: np.ndarray, seed: int
               ) -> tuple[list, np.ndarray]:
    """M0's probe per layer, fitted on all training facts, and its grouped cross-validation."""
    n_splits = min(CV_FOLDS, len(set(groups)))
    cv = np.zeros(len(x_tr))
    probes = []
    for i, x in enumerate(x_tr):
        if n_splits >= 2:
            cv[i] = cross_val_score(_probe(seed), x, y_tr, groups=groups,
                                    cv=GroupKFold(n_splits)).mean()
        probes.append(_probe(seed).fit(x, y_tr))
    return probes, cv


def _linear_probes(ctx: ProbeContext, th: LinearProbesThresholds) -> Finding:
    m0, m1, facts, oracle, seed = ctx.m0, ctx.m1, ctx.facts, ctx.oracle, ctx.seed
    g = gate(m0, m1, facts, th)
    train, test = _splits(facts)
    layers = default_layers(m0)
    y_tr = np.array([_label(f) for f in train])
    y_te = np.array([_label(f) for f in test])
    groups = np.array([f.entity or f.id for f in train])
    chance = _chance(train, test)
    subjects = {"M1": m1} | ({"Mr": oracle} if oracle is not None else {})
    acts = {name: (resid(s, [f.prompt for f in train], layers),
                   resid(s, [f.prompt for f in test], layers))
            for name, s in {"M0": m0, **subjects}.items()}
    res: dict[str, np.ndarray] = {k: np.zeros(len(layers)) for k in
                                  ["cv_M0", "M0"] + [f"{t}_{n}" for n in subjects
                                                     for t in ("transfer", "fresh")]}
    key = ("linear_probes", tuple(y_tr), tuple(f.prompt for f in test), tuple(layers), seed)
    # one BLAS thread: these fits are small (a few hundred rows), and BLAS threads spinning
    # beside torch's cost 12x on 2 cores (SmolLM2's layer-0 probe: 2.7 s -> 0.22 s)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # M0's probes (and a fixed oracle's fresh ones) are the same for every M1 it is compared
        # with: fitted once per battery session (a pool scores many edits of one M0).
        p0s, res["cv_M0"] = _memo(m0, key, lambda: _m0_probes(acts["M0"][0], y_tr, groups, seed))
        for i, p0 in enumerate(p0s):
            res["M0"][i] = (p0.predict(acts["M0"][1][i]) == y_te).mean()
            for name in subjects:
                x_te = acts[name][1][i]
                res[f"transfer_{name}"][i] = (p0.predict(x_te) == y_te).mean()
        for name, s in subjects.items():
            res[f"fresh_{name}"] = _memo(s, key + ("fresh",), lambda a=acts[name]: np.array([
                (_probe(seed).fit(a[0][i], y_tr).predict(a[1][i]) == y_te).mean()
                for i in range(len(layers))]))
    mask = late(layers, m0.n_layers)
    best = {k: float(v[mask].max()) for k, v in res.items()}
    m1_best = max(best["transfer_M1"], best["fresh_M1"])
    base = best["M0"] - chance
    kept = (m1_best - chance) / base if base > 0 else 0.0
    scores = {"chance": chance, "late_M0": best["M0"], "late_transfer_M1": best["transfer_M1"],
              "late_fresh_M1": best["fresh_M1"], "late_cv_M0": best["cv_M0"],
              "kept_fraction": kept, "forget_acc_M0": g.forget0, "forget_acc_M1": g.forget1}
    over_oracle = None
    if oracle is not None:
        mr_best = max(best["transfer_Mr"], best["fresh_Mr"])
        scores |= {"late_transfer_Mr": best["transfer_Mr"], "late_fresh_Mr": best["fresh_Mr"],
                   "late_M1_minus_Mr": m1_best - mr_best}
        over_oracle = m1_best - mr_best
    reading, reason = _read(th, g.blocker(), base, kept, over_oracle, scores)
    return Finding("linear_probes", reading, reason, scores,
                   {f"acc_{k}": v for k, v in res.items()},
                   meta={"layers": layers, "n_train": len(train), "n_test": len(test),
                         "trained_on": "retain+holdout", "tested_on": "forget", "seed": seed})


PROBE = ProbeSpec("linear_probes", LinearProbesThresholds, _linear_probes)


def linear_probes(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                  seed: int = 0, progress: bool = False, device: str | None = None,
                  thresholds: LinearProbesThresholds | None = None) -> Finding:
    """Per-layer decodability of forget answers: baseline, transfer and fresh probes."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds)


def _read(th: LinearProbesThresholds, blocker, base, kept, over_oracle, s) -> tuple[str, str]:
    if blocker:
        return "inconclusive", blocker
    if base < th.min_signal:
        return "inconclusive", "probes cannot decode forget answers even from M0"
    where = (f"late-layer decoding M0 {s['late_M0']:.0%}, M1 transfer "
             f"{s['late_transfer_M1']:.0%} / fresh {s['late_fresh_M1']:.0%}, "
             f"chance {s['chance']:.0%}")
    if kept >= th.kept_min and (over_oracle is None or over_oracle >= th.oracle_tol):
        return "suppression-signature", f"forget answers still decodable from M1 ({where})"
    if kept <= th.gone_max or (over_oracle is not None and over_oracle < th.oracle_tol):
        return "removal-consistent", f"forget answers no longer decodable from M1 ({where})"
    return "inconclusive", f"forget answers partly decodable from M1 ({where})"
