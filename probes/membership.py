"""Membership: does M1 still score the forget facts as training members, as M0 does, or as
never-seen text, as the retrain oracle does?

Each fact gets a Min-K%++ score (Zhang et al., "Min-K%++: Improved baseline for detecting
pre-training data from large language models", ICLR 2025): per scored token,
(log p(x_t) - mu_t) / sigma_t, with mu_t and sigma_t the mean and standard deviation of log p
under the model's own next-token distribution at t, averaged over the lowest k% of the tokens.
The ROC AUC of forget facts (members) against never-seen facts (the `unseen` split) is read
against the oracle's, as MUSE's PrivLeak compares them (Shi et al., ICLR 2025); without an
oracle, against chance (0.5), a weaker floor.

By default the answer tokens are scored: facts are learnt as an answer to a prompt (the toy
world and TOFU-style fine-tuning train on the answer tokens only), so the prompt's own tokens
were never a training target and their likelihood is noise to a membership test (on the toy
world, log-probs far below chance for members and non-members alike). `tokens="text"` scores
the whole prompt + answer, for models that read the facts as running text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import GateThresholds, gate, seed_all
from workbench.batching import chunks, encode
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject

Tokens = Literal["text", "answer"]


@dataclass(frozen=True)
class MembershipThresholds(GateThresholds):
    """How the forget-vs-unseen ROC AUCs read."""

    # M1's AUC within this of the floor's (the oracle's, else chance) reads as removal
    margin: float = 0.1
    # ...and as suppression when it keeps at least this fraction of M0's AUC above the floor
    kept_min: float = 0.5
    # M0's AUC must exceed the floor's by this much for the test to say anything
    min_signal: float = 0.2


STATS_ROWS = 4  # rows whose vocabulary statistics are computed at once


@torch.no_grad()
def min_k_plus_plus(subject: Subject, prompts: list[str], answers: list[str], k: float = 0.2,
                    tokens: Tokens = "answer", batch_size: int = 16) -> np.ndarray:
    """Min-K%++ score of each prompt + answer text (higher: more member-like): the mean of the
    lowest `k` fraction (at least one) of the per-token z-scores over the scored tokens (the
    answer's with `tokens="answer"`, every predicted token with `"text"`)."""
    if not 0 < k <= 1:
        raise WorkbenchError(f"k must be in (0, 1], got {k}")
    out = []
    for sl in chunks(len(prompts), batch_size):
        b = encode(subject.tokenizer, prompts[sl], answers[sl], device=subject.device)
        logits = subject.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        mask = (b.answer_mask[:, :-1] if tokens == "answer"
                else b.attention_mask[:, 1:].bool())
        # the vocabulary statistics a few rows at a time: each step holds several
        # [rows, positions, vocab] float32 temporaries, which for a whole batch of a 49k-token
        # vocabulary were the largest allocation of a full audit
        for r in chunks(len(b.input_ids), STATS_ROWS):
            z = _z_scores(logits[r, :-1], b.input_ids[r, 1:])
            for row, m in zip(z, mask[r], strict=True):
                vals = row[m]
                n = max(1, math.ceil(k * len(vals)))
                out.append(float(vals.sort().values[:n].mean()))
    return np.array(out)


def _z_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per position, the target's log-prob standardised by the next-token distribution's own
    mean and spread of log-probs (Min-K%++'s per-token score)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = (p * (logp - mu[..., None]).square()).sum(-1).clamp_min(1e-12).sqrt()
    return (logp.gather(-1, targets[..., None])[..., 0] - mu) / sigma


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """ROC AUC of telling members (label 1) from non-members by score (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(y, np.r_[members, nonmembers]))


def _membership(ctx: ProbeContext, th: MembershipThresholds, k: float = 0.2,
                tokens: Tokens = "answer", batch_size: int = 16) -> Finding:
    m0, m1, facts, oracle = ctx.m0, ctx.m1, ctx.facts, ctx.oracle
    seed_all(ctx.seed)
    if tokens not in ("text", "answer"):
        raise WorkbenchError(f"tokens must be 'text' or 'answer', not {tokens!r}")
    g = gate(m0, m1, facts, th, oracle=oracle)
    if g.blocker():
        return Finding("membership", "inconclusive", g.blocker())
    unseen = facts.split("unseen")
    if not len(unseen):
        return Finding("membership", "inconclusive",
                       "does not apply: the fact set has no `unseen` facts to compare the "
                       "forget facts with (never-seen facts; for a real model, facts it does "
                       "not know)")
    models = {"M0": m0, "M1": m1} | ({"Mr": oracle} if oracle is not None else {})
    arrays: dict[str, np.ndarray] = {}
    scores: dict[str, float] = {}
    todo = [(role, split, fs) for role in models
            for split, fs in (("forget", facts.forget), ("unseen", unseen))]
    for role, split, fs in tqdm(todo, desc="membership", disable=not ctx.progress):
        arrays[f"score_{split}_{role}"] = min_k_plus_plus(
            models[role], [f.prompt for f in fs], [f.answer for f in fs], k, tokens, batch_size)
    for role in models:
        scores[f"auc_{role}"] = auc(arrays[f"score_forget_{role}"], arrays[f"score_unseen_{role}"])
    floor = scores.get("auc_Mr", 0.5)
    if "auc_Mr" in scores and scores["auc_Mr"] > 0:
        scores["privleak"] = (scores["auc_M1"] - scores["auc_Mr"]) / scores["auc_Mr"]
    reading, reason = _read(th, scores["auc_M0"], scores["auc_M1"], floor,
                            "the oracle" if oracle is not None else "chance (no oracle)")
    return Finding("membership", reading, reason, scores, arrays,
                   meta={"models": list(models), "k": k, "tokens": tokens,
                         "n_forget": len(facts.forget), "n_unseen": len(unseen),
                         "floor": "retrain oracle" if oracle is not None else "chance (0.5)",
                         "seed": ctx.seed})


def _read(th: MembershipThresholds, a0: float, a1: float, floor: float, floor_name: str
          ) -> tuple[str, str]:
    aucs = f"AUC M0 {a0:.2f}, M1 {a1:.2f}, {floor_name} {floor:.2f}"
    if a0 - floor < th.min_signal:
        return ("inconclusive", f"M0 itself hardly tells the forget facts from never-seen ones "
                                f"({aucs}): nothing for M1 to keep or lose")
    if abs(a1 - floor) <= th.margin:
        return ("removal-consistent", f"M1's scores do not set the forget facts apart from "
                                      f"never-seen ones, like {floor_name} ({aucs})")
    kept = (a1 - floor) / (a0 - floor)
    if kept >= th.kept_min:
        return ("suppression-signature",
                f"a membership attack still flags the forget facts in M1 ({kept:.0%} of M0's "
                f"AUC over {floor_name}; {aucs}), which a model that never learnt them does "
                "not allow")
    if a1 < floor:
        return ("inconclusive", f"M1 scores the forget facts below never-seen ones ({aucs}): "
                                "it singles them out (over-unlearning, a negative PrivLeak), "
                                "which membership alone cannot call removal or suppression")
    return ("inconclusive", f"M1 keeps {kept:.0%} of M0's AUC over {floor_name}, between the "
                            f"two thresholds ({aucs})")


PROBE = ProbeSpec("membership", MembershipThresholds, _membership)


def membership(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
               k: float = 0.2, tokens: Tokens = "answer", batch_size: int = 16, seed: int = 0,
               progress: bool = False, device: str | None = None,
               thresholds: MembershipThresholds | None = None) -> Finding:
    """Min-K%++ membership AUC of forget vs never-seen facts for M0, M1 (and the oracle), read
    as M1's distance from the oracle's AUC (or from chance)."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds,
                 k=k, tokens=tokens, batch_size=batch_size)
