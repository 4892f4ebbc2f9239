"""Pieces shared by the analysis modules: the behavioural gate and the thresholds it and the
readout modules use (chosen on the control edits), cached captures, layer choice."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.behavior import answer_logprobs
from workbench.capture import capture, check_request
from workbench.facts import FactSet
from workbench.models import Subject, check_compatible


@dataclass(frozen=True)
class GateThresholds:
    """When an edit counts as unlearned or damaged (every probe's first reading step)."""

    # unlearned: forget accuracy fell at least this much (absolute) below M0's
    forgot_min: float = 0.25
    # damaged (no module reads it): retain accuracy fell more than this
    damage_max: float = 0.3


@dataclass(frozen=True)
class ReadoutThresholds(GateThresholds):
    """How much of M0's above-chance readout of the forget answers M1 keeps (logit lens, linear
    probes): kept at `kept_min` of M0's, gone at most `gone_max` of it or within `oracle_tol`
    of the oracle's; M0 must reach `min_signal` above chance for the module to say anything."""

    kept_min: float = 0.5
    gone_max: float = 0.25
    oracle_tol: float = 0.15
    min_signal: float = 0.2


@dataclass(frozen=True)
class Gate:
    """Teacher-forced greedy accuracy of M0 and M1 on forget and retain, and what it means."""

    forget0: float
    forget1: float
    retain0: float
    retain1: float
    thresholds: GateThresholds = GateThresholds()

    @property
    def unlearned(self) -> bool:
        return self.forget0 - self.forget1 >= self.thresholds.forgot_min

    @property
    def damaged(self) -> bool:
        return self.retain0 - self.retain1 > self.thresholds.damage_max

    def blocker(self) -> str | None:
        """Why no module should read this edit (None when it should)."""
        if self.damaged:
            return (f"M1 is damaged (retain accuracy {self.retain0:.0%} -> {self.retain1:.0%}), "
                    "not selectively unlearned")
        if not self.unlearned:
            return (f"M1 still answers the forget facts ({self.forget0:.0%} -> "
                    f"{self.forget1:.0%}): nothing to explain")
        return None


_MEMO: dict[tuple, tuple[weakref.ref, object]] = {}
_MEMO_MAX = 256  # entries of one battery session; arrays are small, models weakly held


def _memo(subject: Subject, key: tuple, make):
    """Remember per-subject results for one battery (keyed by the model object and inputs)."""
    k = (id(subject.model), *key)
    hit = _MEMO.pop(k, None)
    if hit is not None and hit[0]() is subject.model:
        _MEMO[k] = hit  # most recently used last: eviction takes the oldest
        return hit[1]
    value = make()
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[k] = (weakref.ref(subject.model), value)
    return value


def _memo_has(subject: Subject, key: tuple) -> bool:
    hit = _MEMO.get((id(subject.model), *key))
    return hit is not None and hit[0]() is subject.model


def answer_table(subject: Subject, prompts: Sequence[str], answers: Sequence[str],
                 batch_size: int = 64, keep_resid: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`answer_logprobs` (sum log-prob, first-token log-prob, exact match) memoised for one
    battery: the gate, behaviour under pressure and the attacks ask for the same rows.
    `keep_resid`: the same pass also memoises `resid` of these prompts, for prompt sets other
    modules read the residual stream of (the splits, the mixed prompts)."""
    prompts, answers = tuple(prompts), tuple(answers)
    resid_key = ("resid", prompts)

    def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = None
        if keep_resid and not _memo_has(subject, resid_key):
            h = np.empty((subject.n_layers, len(prompts), subject.d_model), np.float32)
        out = answer_logprobs(subject, prompts, answers, batch_size, resid_out=h)
        for a in out:  # shared between modules: a caller that writes to one would fail loudly
            a.flags.writeable = False
        if h is not None:
            h.flags.writeable = False
            _memo(subject, resid_key, lambda: h)
        return out

    return _memo(subject, ("answers", prompts, answers), make)


def exact_match(subject: Subject, facts: FactSet, batch_size: int = 64) -> np.ndarray:
    """Per-fact teacher-forced greedy exact match (one batched forward pass, memoised)."""
    return answer_table(subject, [f.prompt for f in facts], [f.answer for f in facts],
                        batch_size, keep_resid=True)[2]


def gate(m0: Subject, m1: Subject, facts: FactSet,
         thresholds: GateThresholds = GateThresholds(), oracle: Subject | None = None) -> Gate:
    """Check compatibility (of the oracle too, when given) and measure whether M1 unlearned the
    forget split."""
    check_compatible(m0, m1)
    if oracle is not None:
        check_compatible(m0, oracle)
    facts.forget.require_nonempty("forget split of")
    retain = facts.retain if len(facts.retain) else facts.holdout
    acc = {(name, split): float(exact_match(m, fs).mean()) if len(fs) else 0.0
           for name, m in (("m0", m0), ("m1", m1)) for split, fs in (("f", facts.forget),
                                                                     ("r", retain))}
    return Gate(acc["m0", "f"], acc["m1", "f"], acc["m0", "r"], acc["m1", "r"], thresholds)


def default_layers(subject: Subject, max_layers: int = 12) -> list[int]:
    """All layers of a small model; else `max_layers` evenly spaced ones ending at the last."""
    n = subject.n_layers
    if n <= max_layers:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_layers)})


def resid(subject: Subject, prompts: Sequence[str], layers: Sequence[int],
          batch_size: int = 32) -> np.ndarray:
    """`resid_post` at the last prompt token: float32 numpy [layer, n, d_model]. Every layer
    is captured and memoised per prompt set (one pass to the last block, which every caller
    reaches anyway), so modules asking for other layers of the same prompts share it."""
    every = list(range(subject.n_layers))

    def make() -> np.ndarray:
        acts = capture(subject, list(prompts), every, batch_size=batch_size)
        out = acts.stack().float().cpu().numpy()
        out.flags.writeable = False
        return out

    check_request(subject, layers)
    return _memo(subject, ("resid", tuple(prompts)), make)[list(layers)]


def late(layers: Sequence[int], n_layers: int) -> np.ndarray:
    """Mask of the middle-to-late layers (index >= half the depth) among `layers`."""
    return np.array([L >= n_layers // 2 for L in layers])


def seed_all(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def joiner(tokenizer) -> str:
    """A sentence break the tokenizer knows (". " for natural LMs; ", " or " " for toy vocabularies)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for sep in (". ", " , "):
        ids = tokenizer(sep.strip(), add_special_tokens=False)["input_ids"]
        if ids and (unk is None or unk not in ids):
            return sep
    return " "


def mixed_prompts(tokenizer, prefixes: FactSet, questions: FactSet, seed: int = 0,
                  n_max: int = 64) -> tuple[list[str], list[str], list[int]]:
    """Each question (up to `n_max`, seeded choice) preceded by a stated prefix fact:
    (prompts, answers, question indices)."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(questions))[:n_max])
    pick = rng.integers(0, len(prefixes), size=len(idx))
    sep = joiner(tokenizer)
    prompts = [f"{prefixes[int(j)].prompt}{prefixes[int(j)].answer}{sep}{questions[int(i)].prompt}"
               for i, j in zip(idx, pick, strict=True)]
    return prompts, [questions[int(i)].answer for i in idx], [int(i) for i in idx]
