"""Logit lens: where does each forget answer form, and where does it disappear?

Final norm + unembedding applied to every block's `resid_post` at the last prompt token. A
suppressor leaves the answer readable in the middle/late layers and removes it only at the end;
a removal leaves nothing to read. A fact counts as *read* at a layer when its answer's first
token beats every other answer value of the same relation (chance 1/|values|), or, for facts
without a relation, when it is the top token of the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import ReadoutThresholds, gate, late, resid
from workbench.batching import chunks, encode
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject, final_norm


@dataclass(frozen=True)
class LogitLensThresholds(ReadoutThresholds):
    """Reading thresholds of the logit lens (on late-layer read rates above chance)."""


def first_tokens(subject: Subject, facts: FactSet) -> np.ndarray:
    return np.array([subject.tokenizer(f.answer, add_special_tokens=False)["input_ids"][0]
                     for f in facts])


def candidates(subject: Subject, facts: FactSet, universe: FactSet | None = None) -> list[list[int]]:
    """Per fact: the first tokens of every answer value its relation takes in `universe`."""
    universe = universe or facts
    tok = dict(zip((f.id for f in universe), first_tokens(subject, universe).tolist(), strict=True))
    by_rel: dict[str, set[int]] = {}
    for f in universe:
        if f.relation:
            by_rel.setdefault(f.relation, set()).add(tok[f.id])
    return [sorted(by_rel.get(f.relation or "", ())) for f in facts]


@torch.no_grad()
def _lens_logits(subject: Subject, h: np.ndarray) -> torch.Tensor:
    """Unembed [layer, n, d] residuals directly (not through lm_head's hooks): [layer, n, vocab]."""
    model = subject.model
    head = model.get_output_embeddings()
    x = torch.from_numpy(h).to(subject.device, subject.dtype)
    return nn.functional.linear(final_norm(model)(x), head.weight, head.bias).float()


def answer_rank_by_layer(subject: Subject, facts: FactSet, device: str | None = None,
                         layers: Sequence[int] | None = None) -> np.ndarray:
    """Vocabulary rank (0 = top) of each answer's first token read at every layer: [layers, facts].

    `device` is accepted for symmetry; the work runs where the subject lives."""
    del device
    layers = list(range(subject.n_layers)) if layers is None else list(layers)
    return _lens(subject, facts, layers)[0]


def answer_lens_by_layer(subject: Subject, facts: FactSet, layers: Sequence[int] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary rank (0 = top) and probability of each answer's first token read at every
    layer: two [layers, facts] arrays (the dashboard's heatmap shows either)."""
    layers = list(range(subject.n_layers)) if layers is None else list(layers)
    rank, prob, _ = _lens(subject, facts, layers)
    return rank, prob


def _lens(subject: Subject, facts: FactSet, layers: list[int], cands: list[list[int]] | None = None,
          batch: int = 64, keep: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank [L, n], probability [L, n], read [L, n] bool) for `facts` (the `keep` rows of
    them, when given: the residuals are those of the whole set, shared with other modules) at
    `layers`, unembedded a layer and `batch` facts at a time (all layers at once would hold
    [L, n, vocab] twice)."""
    h = resid(subject, [f.prompt for f in facts], layers)
    if keep is not None:
        h = h[:, keep]
        facts = FactSet(tuple(f for f, k in zip(facts, keep, strict=True) if k), facts.name)
        cands = None if cands is None else [c for c, k in zip(cands, keep, strict=True) if k]
    target = torch.from_numpy(first_tokens(subject, facts))
    rows = []
    for i in range(len(layers)):
        parts = [_score(_lens_logits(subject, h[i, sl]).cpu(), target[sl],
                        None if cands is None else cands[sl]) for sl in chunks(len(facts), batch)]
        rows.append([np.concatenate(col) for col in zip(*parts, strict=True)])
    return tuple(np.stack(col) for col in zip(*rows, strict=True))


def _score(logits: torch.Tensor, target: torch.Tensor,
           cands: Sequence[list[int]] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank, probability and 'read' of `target` in logits [..., n, vocab]."""
    idx = target.view(*([1] * (logits.ndim - 2)), -1, 1).expand(*logits.shape[:-1], 1)
    t = logits.gather(-1, idx)
    rank = (logits > t).sum(-1)
    prob = torch.softmax(logits, -1).gather(-1, idx).squeeze(-1)
    read = rank == 0
    if cands is not None:
        for i, c in enumerate(cands):
            if len(c) >= 2:
                read[..., i] = (logits[..., i, c] <= t[..., i, :]).all(-1)
    return rank.numpy(), prob.numpy(), read.numpy()


@torch.no_grad()
def _output(subject: Subject, facts: FactSet, cands, batch_size: int = 32):
    """Rank / prob / read of the answer in the model's *own* next-token logits (hooks included).
    A plain batched forward pass: `capture` stops before the unembedding by design."""
    ranks, probs, read = [], [], []
    target = torch.from_numpy(first_tokens(subject, facts))
    for sl in chunks(len(facts), batch_size):
        b = encode(subject.tokenizer, [f.prompt for f in facts][sl], device=subject.device)
        logits = subject.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        last = logits[torch.arange(len(b.last)), b.last].float().cpu()
        r, p, ok = _score(last, target[sl], cands[sl])
        ranks.append(r), probs.append(p), read.append(ok)
    return np.concatenate(ranks), np.concatenate(probs), np.concatenate(read)


def _logit_lens(ctx: ProbeContext, th: LogitLensThresholds) -> Finding:
    m0, m1, facts = ctx.m0, ctx.m1, ctx.facts
    g = gate(m0, m1, facts, th)
    forget = facts.forget
    cands = candidates(m0, forget, facts)
    outputs = {name: _output(s, forget, cands) for name, s in ctx.subjects.items()}
    known = outputs["M0"][2]  # judge only facts M0 itself answers
    if not known.any():
        raise WorkbenchError("M0 answers none of the forget facts: nothing to trace")
    fs = FactSet(tuple(f for f, k in zip(forget, known, strict=True) if k), "forget-known")
    known_cands = [c for c, k in zip(cands, known, strict=True) if k]
    layers = list(range(m0.n_layers))
    chance = float(np.mean([1 / len(c) if len(c) >= 2 else 0.0 for c in known_cands]))
    arrays, read_rate, out_rate = {}, {}, {}
    for name, s in ctx.subjects.items():
        rank, prob, read = _lens(s, forget, layers, cands, keep=known)
        o_rank, o_prob, o_read = (a[known] for a in outputs[name])
        arrays |= {f"rank_{name}": rank, f"prob_{name}": prob, f"output_rank_{name}": o_rank,
                   f"output_prob_{name}": o_prob}
        read_rate[name] = read.mean(1)
        out_rate[name] = float(o_read.mean())
        arrays[f"read_rate_{name}"] = read_rate[name]
    mask = late(layers, m0.n_layers)
    above = {k: np.clip(v - chance, 0, None) for k, v in read_rate.items()}
    best0 = float(above["M0"][mask].max())
    kept = float(above["M1"][mask].max()) / best0 if best0 > 0 else 0.0
    scores = {"forget_acc_M0": g.forget0, "forget_acc_M1": g.forget1, "chance": chance,
              "late_read_M0": float(read_rate["M0"][mask].max()),
              "late_read_M1": float(read_rate["M1"][mask].max()), "kept_fraction": kept,
              "output_read_M0": out_rate["M0"], "output_read_M1": out_rate["M1"],
              "median_late_rank_M0": float(np.median(arrays["rank_M0"][mask])),
              "median_late_rank_M1": float(np.median(arrays["rank_M1"][mask]))}
    over_oracle = None
    if ctx.oracle is not None:
        scores["late_read_Mr"] = float(read_rate["Mr"][mask].max())
        over_oracle = scores["late_read_M1"] - scores["late_read_Mr"]
        scores["late_read_M1_minus_Mr"] = over_oracle
    reading, reason = _read(th, g.blocker(), best0, kept, over_oracle, scores)
    return Finding("logit_lens", reading, reason, scores, arrays,
                   meta={"layers": layers, "n_facts": len(fs), "seed": ctx.seed,
                         "fact_ids": [f.id for f in fs]})


PROBE = ProbeSpec("logit_lens", LogitLensThresholds, _logit_lens)


def logit_lens(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
               seed: int = 0, progress: bool = False, device: str | None = None,
               thresholds: LogitLensThresholds | None = None) -> Finding:
    """Per-layer readability of the forget answers in M0, M1 (and Mr); see the module doc."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds)


def _read(th: LogitLensThresholds, blocker, best0, kept, over_oracle, s) -> tuple[str, str]:
    if blocker:
        return "inconclusive", blocker
    if best0 < th.min_signal:
        return "inconclusive", "M0's middle/late layers do not show the forget answers yet"
    where = (f"best late-layer read rate {s['late_read_M1']:.0%} in M1 vs "
             f"{s['late_read_M0']:.0%} in M0, output {s['output_read_M1']:.0%}")
    if kept >= th.kept_min and (over_oracle is None or over_oracle >= th.oracle_tol):
        return "suppression-signature", f"forget answers still form inside M1 ({where})"
    if kept <= th.gone_max or (over_oracle is not None and over_oracle < th.oracle_tol):
        return "removal-consistent", f"forget answers no longer form in M1's layers ({where})"
    return "inconclusive", f"forget answers partly readable in M1 ({where})"
