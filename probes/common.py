"""Pieces shared by the analysis modules: the behavioural gate, cached captures, layer choice,
per-layer figures, and the thresholds every reading uses (chosen on the control edits)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.behavior import answer_logprobs
from workbench.capture import capture
from workbench.facts import FactSet
from workbench.models import Subject, check_compatible

# An edit "unlearned" when its forget accuracy fell at least this much (absolute) below M0's.
# Identity: 0; output-only suppressor: ~1.0; toy retrain oracle: ~0.85.
FORGOT_MIN = 0.25
# An edit is "damaged" (no module reads it) when retain accuracy fell more than this.
# Heavy noise: ~0.9; suppressor and oracle: ~0.0.
DAMAGE_MAX = 0.3
# Knowledge "kept" inside M1 when its above-chance readout reaches this fraction of M0's...
KEPT_MIN = 0.5
# ...and "gone" when it is at most this fraction (or within ORACLE_TOL of the oracle's).
GONE_MAX = 0.25
ORACLE_TOL = 0.15
# M0 must show at least this much above-chance readout for a module to say anything.
MIN_SIGNAL = 0.2


@dataclass(frozen=True)
class Gate:
    """Teacher-forced greedy accuracy of M0 and M1 on forget and retain, and what it means."""

    forget0: float
    forget1: float
    retain0: float
    retain1: float

    @property
    def unlearned(self) -> bool:
        return self.forget0 - self.forget1 >= FORGOT_MIN

    @property
    def damaged(self) -> bool:
        return self.retain0 - self.retain1 > DAMAGE_MAX

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
_MEMO_MAX = 32


def _memo(subject: Subject, key: tuple, make):
    """Remember per-subject results for one battery (keyed by the model object and inputs)."""
    k = (id(subject.model), *key)
    hit = _MEMO.get(k)
    if hit is not None and hit[0]() is subject.model:
        return hit[1]
    value = make()
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[k] = (weakref.ref(subject.model), value)
    return value


def exact_match(subject: Subject, facts: FactSet, batch_size: int = 32) -> np.ndarray:
    """Per-fact teacher-forced greedy exact match (one batched forward pass, memoised)."""
    prompts, answers = [f.prompt for f in facts], [f.answer for f in facts]
    return _memo(subject, ("exact", tuple(prompts), tuple(answers)),
                 lambda: answer_logprobs(subject, prompts, answers, batch_size)[2])


def gate(m0: Subject, m1: Subject, facts: FactSet) -> Gate:
    """Check compatibility and measure whether M1 unlearned the forget split."""
    check_compatible(m0, m1)
    facts.forget.require_nonempty("forget split of")
    retain = facts.retain if len(facts.retain) else facts.holdout
    acc = {(name, split): float(exact_match(m, fs).mean()) if len(fs) else 0.0
           for name, m in (("m0", m0), ("m1", m1)) for split, fs in (("f", facts.forget),
                                                                     ("r", retain))}
    return Gate(acc["m0", "f"], acc["m1", "f"], acc["m0", "r"], acc["m1", "r"])


def default_layers(subject: Subject, max_layers: int = 12) -> list[int]:
    """All layers of a small model; else `max_layers` evenly spaced ones ending at the last."""
    n = subject.n_layers
    if n <= max_layers:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_layers)})


def resid(subject: Subject, prompts: Sequence[str], layers: Sequence[int],
          batch_size: int = 32) -> np.ndarray:
    """`resid_post` at the last prompt token: float32 numpy [layer, n, d_model] (memoised)."""
    def make() -> np.ndarray:
        acts = capture(subject, list(prompts), layers, batch_size=batch_size)
        return acts.stack().float().cpu().numpy()

    return _memo(subject, ("resid", tuple(prompts), tuple(layers)), make)


def late(layers: Sequence[int], n_layers: int) -> np.ndarray:
    """Mask of the middle-to-late layers (index >= half the depth) among `layers`."""
    return np.array([L >= n_layers // 2 for L in layers])


def line_figure(title: str, x: Sequence, series: dict[str, Sequence[float]], y_title: str,
                x_title: str = "layer"):
    """A plotly figure with one line per model (M0 / M1 / Mr ...)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=[float(v) for v in ys], mode="lines+markers",
                                 name=name))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      template="plotly_white", height=360)
    return fig


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
