"""`steer`: directional steering / ablation on the residual stream, optionally gated per input.

The direction at each chosen layer is the normalised difference of the mean-pooled (over each
prompt's tokens) residual activations of forget minus retain prompts (`direction=diffmean`), or a
refusal direction: answering minus refusing contrast texts (`direction=refusal`). At inference
mode `add` adds `-coef * |h| * direction` (coef in units of the layer's mean residual norm on the
forget prompts) and mode `ablate` projects the direction out, at every position. A gate decides
per input whether to steer at all: `gate=keys` (default) fires when one of the input's tokens is
close in cosine to the residual of a forget entity's token (see `fit_key_gate`), so other entities
are left alone; `gate=logreg` / `gate=meandiff` use a linear detector fitted on forget vs retain
prompts. The weights are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.batching import last_true, span_mask
from workbench.capture import capture
from workbench.edits import Edit
from workbench.entities import with_entities
from workbench.errors import LayerError, WorkbenchError
from workbench.facts import FactSet, phrasings, unnamed
from workbench.models import Subject
from workbench.operators.base import Operator, OperatorConfig, register_operator
from workbench.operators.interventions import ResidualSteer, SteerMode, key_similarity
from workbench.options import option

Direction = Literal["diffmean", "refusal"]
Gate = Literal["none", "keys", "logreg", "meandiff"]
DIRECTIONS = get_args(Direction)
GATES = get_args(Gate)

# Contrast texts for the refusal direction: the same question answered vs. refused.
REFUSAL_CONTRASTS: tuple[tuple[str, str], ...] = (
    ("Q: Where does she live? A: She lives in", "Q: Where does she live? A: I do not know"),
    ("Q: What is his job? A: He works as a", "Q: What is his job? A: I cannot say"),
    ("The answer to your question is", "I am sorry, I do not know the answer to your question"),
    ("Sure, here is the fact you asked about:", "Sorry, I have no information about that."),
    ("I know this one. It is", "I have never heard of this. I cannot answer."),
    ("The capital of that country is", "I am not able to tell you the capital of that country"),
    ("Of course. The name you are looking for is", "I refuse to answer. I do not know the name"),
    ("Yes, I remember: the year was", "No, I do not remember the year"),
)


@dataclass(frozen=True)
class SteerConfig(OperatorConfig):
    """Where and how to steer, and the gate that decides per input whether to."""

    layers: tuple[int, ...] | None = option(None, "blocks to steer after (None: the block at a "
                                                  "quarter of the depth)")
    mode: SteerMode = option("add", "add -coef * |h| * direction, or ablate (project it out)")
    direction: Direction = option("diffmean", "forget minus retain mean activation, or a "
                                              "refusal direction (answering minus refusing)")
    coef: float = option(12.0, "mode add: push size in units of the layer's mean residual norm")
    gate: Gate = option("keys", "when to steer: always (none), near a forget entity's key "
                                "(keys), or a linear detector (logreg, meandiff)")
    gate_layer: int | None = option(None, "block the gate reads (None: the first steered one)")
    gate_c: float = option(1.0, "inverse L2 strength of the logistic-regression gate", gt=0)
    gate_threshold: float = option(0.5, "gate cut between the top retain input (0) and the "
                                        "bottom forget input (1); near 1 spares more")
    use_paraphrases: bool = option(True, "fit on every phrasing of each fact, not only the "
                                         "prompt")
    batch_size: int = option(32, "prompts per forward pass", ge=1)


def default_layers(subject: Subject) -> tuple[int, ...]:
    return (max(0, subject.n_layers // 4),)


def pooled(subject: Subject, prompts: Sequence[str], layers: Sequence[int],
           batch_size: int = 32) -> dict[int, Float[Tensor, "n d_model"]]:  # noqa: F722
    """Per-prompt mean over its tokens of the residual stream after each block in `layers`."""
    acts = capture(subject, list(prompts), layers, position="all", batch_size=batch_size)
    lengths = acts.lengths.to(subject.device)
    out = {}
    for L in layers:
        h = acts.layer(L).float()
        mask = (torch.arange(h.shape[1], device=h.device)[None] < lengths[:, None]).float()
        out[L] = (h * mask[..., None]).sum(1) / lengths[:, None].float()
    return out


def mean_token_norm(subject: Subject, prompts: Sequence[str], layer: int,
                    batch_size: int = 32) -> float:
    """Mean L2 norm of the residual after `layer` over every real token of `prompts`."""
    acts = capture(subject, list(prompts), [layer], position="all", batch_size=batch_size)
    h = acts.layer(layer).float()
    mask = torch.arange(h.shape[1], device=h.device)[None] < acts.lengths.to(h.device)[:, None]
    return float(h.norm(dim=-1)[mask].mean())


def fit_gate(pos: Tensor, neg: Tensor, kind: str, c: float = 1.0, seed: int = 0,
             threshold: float = 0.9) -> tuple[Tensor, float]:
    """A linear detector (w, b) that fires (`w . h + b > 0`) on `pos` (forget) rows; its cut sits
    at `threshold` of the way from the top `neg` score to the bottom `pos` score."""
    w, b = _fit_linear(pos, neg, kind, c, seed)
    sp, sn = pos.float() @ w + b, neg.float() @ w + b
    lo, hi = float(sn.max()), float(sp.min())
    if hi <= lo:  # not separable on the fitting data: fall back to the midpoint of the means
        lo, hi = float(sn.mean()), float(sp.mean())
    return w, b - (lo + threshold * (hi - lo))


def _fit_linear(pos: Tensor, neg: Tensor, kind: str, c: float, seed: int) -> tuple[Tensor, float]:
    if kind == "meandiff":
        d = pos.mean(0) - neg.mean(0)
        w = d / d.norm().clamp_min(1e-12)
        b = -0.5 * float(w @ pos.mean(0) + w @ neg.mean(0))
        return w, b
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x = torch.cat([pos, neg]).double().cpu().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    # standardise each feature so `gate_c` means the same on every model, then fold the
    # scaling back into (w, b) so the hook stays a plain dot product on the raw residual
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
    with threadpool_limits(1):  # a small fit: BLAS threads beside torch's only slow it down
        clf.fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - w @ mu)
    return torch.tensor(w, dtype=torch.float32), b


def fit_key_gate(subject: Subject, forget: FactSet, retain: FactSet, layer: int,
                 config: SteerConfig) -> tuple[Tensor, float]:
    """Keys = the residual after `layer` at the last token of each forget fact's entity, in every
    phrasing (a codebook of keys in the spirit of GRACE, Hartvigsen et al. 2023); an input fires
    when one of its tokens is close enough in cosine to a key. The cut sits `gate_threshold` of the
    way from the most key-like retain input to the least key-like forget phrasing, each forget
    phrasing scored leave-one-out (against the keys of the other phrasings), so the cut is set on
    phrasings the keys did not include."""
    rows = phrasings(with_entities(forget)[0], config.use_paraphrases)  # unannotated: inferred
    if missing := unnamed(rows):
        raise WorkbenchError(f"steer gate=keys needs each forget fact's entity in its prompts; "
                             f"{len(missing)} prompt(s) lack it and none could be inferred "
                             f"(e.g. {missing[0]!r}); name them in 'entity' or use gate=logreg")
    prompts = [p for _, p in rows]
    acts = capture(subject, prompts, [layer], position="all", batch_size=config.batch_size)
    h = acts.layer(layer).float()
    ent = span_mask(subject.tokenizer, prompts, [f.entity for f, _ in rows], h.shape[1])
    ent = ent.to(h.device)
    last = last_true(ent)  # last entity token of each row
    keys = torch.nn.functional.normalize(h[torch.arange(len(rows)), last], dim=-1)
    sim = (keys @ keys.T).fill_diagonal_(-1.0)
    hi = float(sim.amax(1).min())  # least key-like forget phrasing, leave-one-out
    r_prompts = _prompts(retain, config.use_paraphrases)
    ra = capture(subject, r_prompts, [layer], position="all", batch_size=config.batch_size)
    real = torch.arange(ra.layer(layer).shape[1])[None] < ra.lengths[:, None]
    lo = float(key_similarity(ra.layer(layer), real.to(ra.layer(layer).device), keys).max())
    if hi <= lo:  # a forget phrasing is less key-like than some retain input: favour sparing
        hi = lo
    return keys.cpu(), lo + config.gate_threshold * (hi - lo)


def _prompts(facts: FactSet, paraphrases: bool) -> list[str]:
    return [p for _, p in phrasings(facts, paraphrases)]


def validate(subject: Subject, config: SteerConfig, forget: FactSet) -> tuple[int, ...]:
    """Check the config against the subject; return the layers to steer."""
    forget.require_nonempty("forget set")
    layers = tuple(config.layers) if config.layers else default_layers(subject)
    n = subject.n_layers
    bad = [L for L in (*layers, *(() if config.gate_layer is None else (config.gate_layer,)))
           if not 0 <= L < n]
    if bad:
        raise LayerError(f"steer: layer(s) {bad} out of range: {subject.name} has layers "
                         f"0..{n - 1}")
    return tuple(sorted(set(layers)))


def build_steer(subject: Subject, forget: FactSet, retain: FactSet,
                config: SteerConfig) -> ResidualSteer:
    """Fit the directions (and gate) of a `ResidualSteer` intervention on `subject`."""
    layers = validate(subject, config, forget)
    if config.gate != "none" or config.direction == "diffmean":
        retain.require_nonempty("retain set")
    gate_layer = config.gate_layer if config.gate_layer is not None else min(layers)
    f_prompts = _prompts(forget, config.use_paraphrases)
    r_prompts = _prompts(retain, config.use_paraphrases) if len(retain) else []
    need = sorted(set(layers) | ({gate_layer} if config.gate in ("logreg", "meandiff") else set()))
    pf = pooled(subject, f_prompts, need, config.batch_size)
    pr = pooled(subject, r_prompts, need, config.batch_size) if r_prompts else {}
    if config.direction == "refusal":
        pa = pooled(subject, [a for a, _ in REFUSAL_CONTRASTS], layers, config.batch_size)
        pn = pooled(subject, [r for _, r in REFUSAL_CONTRASTS], layers, config.batch_size)
        dirs = torch.stack([pa[L].mean(0) - pn[L].mean(0) for L in layers])
    else:
        dirs = torch.stack([pf[L].mean(0) - pr[L].mean(0) for L in layers])
    norms = torch.tensor([mean_token_norm(subject, f_prompts, L, config.batch_size)
                          for L in layers])
    gate_w, gate_b, keys = None, 0.0, None
    if config.gate == "keys":
        keys, gate_b = fit_key_gate(subject, forget, retain, gate_layer, config)
    elif config.gate != "none":
        gate_w, gate_b = fit_gate(pf[gate_layer], pr[gate_layer], config.gate, config.gate_c,
                                  config.seed, config.gate_threshold)
    return ResidualSteer(layers, dirs.cpu(), config.coef * norms, config.mode,
                         None if config.gate == "none" else gate_layer, gate_w, gate_b,
                         subject.tokenizer.pad_token_id, name="steer", gate_keys=keys)


@register_operator
class SteerOperator(Operator):
    name = "steer"
    family = "suppression-intended"
    kind = "intervention"
    touches = "residual stream of chosen layers at inference (hooks; weights untouched)"
    config_cls = SteerConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: SteerConfig) -> Edit:
        t0 = time.perf_counter()
        iv = build_steer(subject, forget, retain, config)
        edited = subject.with_interventions(iv)
        return self.make_edit(subject, edited, config, t0)
