"""In-context recovery (after Shumailov et al. 2024, "UnUnlearning: unlearning is not sufficient
for content regulation in advanced generative AI", and Pawelczyk et al. 2024, "In-context
unlearning"): precede each forget question with a few OTHER facts stated with their answers and
see whether M1 answers it again.

Two prefixes, a seeded choice per question: (A) other forget facts, (B) retain facts of the same
relation (holdout when there is no retain split). A prefix never states the question's fact,
its entity nor its answer string, so an answer that comes back was not given in the prompt; it
was still inside. The floor is the retrain oracle given the very same prompts, on its own
recovery scale. Prefixes are cut (fewest facts dropped) to fit the model's positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from probes.attack_common import (
    AttackThresholds,
    read_recovery,
    recovery_fraction,
    weight_attack_blocker,
)
from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import answer_table, gate, joiner, seed_all
from workbench.facts import Fact, FactSet
from workbench.models import Subject

VARIANTS = ("forget", "retain")


@dataclass(frozen=True)
class InContextThresholds(AttackThresholds):
    """Reading thresholds of in-context recovery (recoveries: 0 = M1, 1 = M0)."""


@dataclass(frozen=True)
class ContextPrompts:
    """Questions preceded by stated facts: the prompts, their answers, and what went in."""

    prompts: list[str]
    answers: list[str]
    questions: list[str]  # question fact ids, one per prompt
    prefix_ids: list[list[str]]  # the fact ids stated before each question


def _mentions(text: str, word: str | None) -> bool:
    """`word` (stripped) occurs in `text` as whole words, ignoring case."""
    w = (word or "").strip()
    return bool(w) and re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text, re.IGNORECASE) is not None


def _free(fact: Fact, q: Fact) -> bool:
    """`fact` may be stated before question `q`: another fact, about another entity, whose text
    names neither `q`'s entity nor `q`'s answer."""
    text = f"{fact.prompt}{fact.answer}"
    return (fact.id != q.id and (q.entity is None or fact.entity != q.entity)
            and not _mentions(text, q.entity) and not _mentions(text, q.answer))


def context_prompts(tokenizer, questions: FactSet, pool: FactSet, k: int, seed: int = 0,
                    max_positions: int | None = None, same_relation: bool = False
                    ) -> ContextPrompts:
    """Each question preceded by up to `k` facts of `pool` stated with their answers (seeded;
    same relation first when `same_relation`), never its own fact, entity or answer string;
    the prefix loses facts until prompt + answer fit in `max_positions` tokens."""
    rng = np.random.default_rng(seed)
    sep = joiner(tokenizer)
    prompts, answers, qids, used = [], [], [], []
    for q in questions:
        ok = [f for f in pool if _free(f, q)]
        order = [ok[int(i)] for i in rng.permutation(len(ok))]
        if same_relation and q.relation is not None:
            order = sorted(order, key=lambda f: f.relation != q.relation)  # stable: seeded
        chosen = order[:k]
        while True:
            text = "".join(f"{f.prompt}{f.answer}{sep}" for f in chosen) + q.prompt
            if not chosen or max_positions is None or _length(tokenizer, text + q.answer) <= \
                    max_positions:
                break
            chosen = chosen[:-1]
        prompts.append(text), answers.append(q.answer), qids.append(q.id)
        used.append([f.id for f in chosen])
    return ContextPrompts(prompts, answers, qids, used)


def _length(tokenizer, text: str) -> int:
    bos = 1 if tokenizer.bos_token_id is not None else 0
    return bos + len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _acc(subject: Subject, prompts: Sequence[str], answers: Sequence[str],
         batch_size: int) -> float:
    # memoised: the plain questions are the gate's rows when every forget fact is asked
    return float(answer_table(subject, prompts, answers, batch_size)[2].mean())


def _in_context(ctx: ProbeContext, th: InContextThresholds, k: int = 3, n_max: int = 128,
                batch_size: int = 64) -> Finding:
    m0, m1, facts, oracle = ctx.m0, ctx.m1, ctx.facts, ctx.oracle
    rng = seed_all(ctx.seed)
    g = gate(m0, m1, facts, th, oracle=oracle)
    if g.blocker():
        return Finding("in_context_recovery", "inconclusive", g.blocker())
    fs = facts.forget
    pick = np.sort(rng.permutation(len(fs))[:n_max])
    questions = FactSet(tuple(fs[int(i)] for i in pick), "questions")
    pools = {"forget": fs, "retain": facts.retain if len(facts.retain) else facts.holdout}
    max_pos = getattr(m1.config, "max_position_embeddings", None)
    models = {"M0": m0, "M1": m1} | ({"Mr": oracle} if oracle is not None else {})
    qp, qa = [q.prompt for q in questions], [q.answer for q in questions]
    base = {name: _acc(m, qp, qa, batch_size) for name, m in models.items()}
    scores = {f"forget_acc_{n}": v for n, v in base.items()}
    arrays: dict[str, np.ndarray] = {}
    variants, per_variant = [], {}
    bar = tqdm(total=len(models) * sum(1 for v in VARIANTS if len(pools[v])),
               desc="in-context", disable=not ctx.progress)
    for j, variant in enumerate(VARIANTS):
        if not len(pools[variant]):
            continue
        cp = context_prompts(m1.tokenizer, questions, pools[variant], k, ctx.seed + 1 + j,
                             max_pos, same_relation=variant == "retain")
        accs = {}
        for name, m in models.items():
            accs[name] = _acc(m, cp.prompts, cp.answers, batch_size)
            bar.update()
        # 1 = as M0 answers the same prompts (a small model may answer less well in context)
        rec1 = recovery_fraction(accs["M1"], base["M1"], accs["M0"], th.min_gap)
        recr = (recovery_fraction(accs["Mr"], base["Mr"], accs["M0"], th.min_gap)
                if "Mr" in accs else None)
        scores[f"recovery_{variant}_vs_plain_M0"] = recovery_fraction(
            accs["M1"], base["M1"], base["M0"], th.min_gap)
        per_variant[variant] = (rec1, recr)
        variants.append(variant)
        scores.update({f"ctx_{variant}_acc_{n}": v for n, v in accs.items()})
        scores[f"recovery_{variant}"] = rec1
        if recr is not None:
            scores[f"floor_recovery_{variant}"] = recr
        arrays[f"k_used_{variant}"] = np.array([len(u) for u in cp.prefix_ids])
    bar.close()
    for n in models:
        arrays[f"acc_{n}"] = np.array([base[n]] + [scores[f"ctx_{v}_acc_{n}"]
                                                   for v in variants])
    arrays["recovery_M1"] = np.array([per_variant[v][0] for v in variants])
    if oracle is not None:
        arrays["recovery_Mr"] = np.array([per_variant[v][1] for v in variants])
    meta = {"variants": variants, "conditions": ["no context", *variants], "k": k,
            "n_questions": len(questions), "seed": ctx.seed, "separator": joiner(m1.tokenizer),
            "max_positions": max_pos,
            "floor": "retrain oracle, same prompts" if oracle is not None else None}

    best = max(variants, key=lambda v: _over(*per_variant[v]))
    rec1, recr = per_variant[best]
    scores["recovery"] = rec1
    if recr is not None:
        scores["floor_recovery"] = recr
    meta["best_variant"] = best
    what = f"a prefix of {k} {best} facts"
    if not np.isfinite(rec1):
        top = max(scores[f"ctx_{v}_acc_M0"] for v in variants)
        return Finding("in_context_recovery", "inconclusive",
                       f"M0 itself answers at most {top:.0%} of the forget questions after these "
                       f"prefixes, no more than M1 without them ({base['M1']:.0%}): this model "
                       "does not carry its facts across a prefix, so nothing can come back",
                       scores, arrays, meta)
    reading, reason = read_recovery(what, rec1, _floor(recr), "the retrain oracle (same prompts)",
                                    th)
    hooks = weight_attack_blocker(m0, m1)
    if reading != "suppression-signature" and hooks:
        reading, reason = "inconclusive", (
            f"{reason}; but M1 is M0's weights plus inference-time hooks, so the knowledge is "
            "inside by construction (parameter_restoration reads hooks)")
    return Finding("in_context_recovery", reading, reason, scores, arrays, meta)


def _floor(rec: float | None) -> float | None:
    """The floor as compared: below 0 (the prompts cost the oracle some chance-level guesses,
    which M1 near 0 cannot lose) it counts as 0."""
    return None if rec is None else max(rec, 0.0) if np.isfinite(rec) else rec


def _over(rec1: float, recr: float | None) -> float:
    if not np.isfinite(rec1):
        return -np.inf
    fl = _floor(recr)
    return rec1 - (fl if fl is not None and np.isfinite(fl) else 0.0)


PROBE = ProbeSpec("in_context_recovery", InContextThresholds, _in_context)


def in_context_recovery(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                        k: int = 3, n_max: int = 128, batch_size: int = 64, seed: int = 0,
                        progress: bool = False, device: str | None = None,
                        thresholds: InContextThresholds | None = None) -> Finding:
    """Ask each forget question after `k` other stated facts (forget ones, then retain ones of
    the same relation) and read how much of M0's answer comes back in M1, beside the oracle."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds,
                 k=k, n_max=n_max, batch_size=batch_size)
