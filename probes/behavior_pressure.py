"""Behaviour under pressure: does the forgetting hold when the question is rephrased, and does a
forget fact in the context break unrelated answers (a trigger, i.e. suppression)?

Correctness is the teacher-forced greedy exact match (one batched forward pass per prompt set).
The mixed-prompt trigger compares a retain question after a stated forget fact with the same
question after a stated holdout fact, so a prefix that merely confuses the model cancels out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import GateThresholds, answer_table, gate, mixed_prompts
from workbench.facts import FactSet
from workbench.models import Subject

PARA_SPLITS = ("forget", "retain")
# paraphrases scored per fact and split: all of the forget facts' (the leak reading), and the
# first of each retain fact's (a collateral-damage figure no reading uses; a quarter of the cost)
PARA_PER_FACT = {"forget": None, "retain": 1}


@dataclass(frozen=True)
class BehaviorPressureThresholds(GateThresholds):
    """Reading thresholds of behaviour under pressure."""

    # paraphrased forget accuracy above the canonical one (and above Mr's): a leak
    leak_min: float = 0.2
    # retain accuracy lost to a forget prefix beyond M0's (and Mr's): a trigger
    trigger_min: float = 0.15


def _score(subject: Subject, prompts: list[str], answers: list[str],
           keep_resid: bool = False) -> tuple[float, float]:
    if not prompts:
        return float("nan"), float("nan")
    total, _, exact = answer_table(subject, prompts, answers, keep_resid=keep_resid)
    return float(exact.mean()), float(total.mean())


def _measure(subject: Subject, facts: FactSet, mixed: dict[str, tuple[list, list]]) -> dict:
    out: dict[str, float] = {}
    for split in facts.splits():
        fs = facts.split(split)
        out[f"{split}_acc"], out[f"{split}_logprob"] = _score(  # the signal reads these too
            subject, [f.prompt for f in fs], [f.answer for f in fs], keep_resid=True)
        if split not in PARA_SPLITS:  # paraphrases answer a question only for these two
            continue
        para = [(p, f.answer) for f in fs for p in f.paraphrases[:PARA_PER_FACT[split]]]
        out[f"{split}_para_acc"], out[f"{split}_para_logprob"] = _score(
            subject, [p for p, _ in para], [a for _, a in para])
    for name, (prompts, answers) in mixed.items():
        out[f"retain_after_{name}_acc"], out[f"retain_after_{name}_logprob"] = _score(
            subject, prompts, answers, keep_resid=name == "forget")  # the signal's drag prompts
    return out


def _behavior_pressure(ctx: ProbeContext, th: BehaviorPressureThresholds) -> Finding:
    m0, m1, facts, oracle, seed = ctx.m0, ctx.m1, ctx.facts, ctx.oracle, ctx.seed
    g = gate(m0, m1, facts, th)
    questions = facts.retain if len(facts.retain) else facts.holdout
    mixed: dict[str, tuple[list, list]] = {}
    for name, prefixes in (("forget", facts.forget), ("holdout", facts.holdout)):
        if len(prefixes) and len(questions):
            p, a, _ = mixed_prompts(m0.tokenizer, prefixes, questions, seed)
            mixed[name] = (p, a)
    table = {name: _measure(s, facts, mixed) for name, s in ctx.subjects.items()}
    scores = {f"{k}_{name}": v for name, row in table.items() for k, v in row.items()}

    def trig(name: str) -> float:
        row = table[name]
        return row.get("retain_after_holdout_acc", np.nan) - row.get("retain_after_forget_acc",
                                                                     np.nan)

    trigger = trig("M1") - trig("M0")
    leak = table["M1"]["forget_para_acc"] - table["M1"]["forget_acc"]
    if oracle is not None:
        trigger = min(trigger, trig("M1") - trig("Mr"))
        leak = min(leak, table["M1"]["forget_para_acc"] - table["Mr"]["forget_para_acc"])
    scores |= {"mixed_trigger": float(trigger), "paraphrase_gap": float(leak),
               "mixed_retain_drop": float(table["M0"].get("retain_after_forget_acc", np.nan)
                                          - table["M1"].get("retain_after_forget_acc", np.nan))}
    reading, reason = _read(th, g.blocker(), trigger, leak, table)
    arrays = {f"{name}_{k}": np.array([v]) for name, row in table.items() for k, v in row.items()
              if k.endswith("_acc")}
    return Finding("behavior_pressure", reading, reason, scores, arrays,
                   meta={"n_mixed": len(mixed.get("forget", ([], []))[0]), "seed": seed,
                         "correctness": "teacher-forced greedy exact match",
                         "paraphrases_per_fact": {k: v or "all" for k, v in PARA_PER_FACT.items()},
                         "models": list(table)})


PROBE = ProbeSpec("behavior_pressure", BehaviorPressureThresholds, _behavior_pressure)


def behavior_pressure(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                      seed: int = 0, progress: bool = False, device: str | None = None,
                      thresholds: BehaviorPressureThresholds | None = None) -> Finding:
    """Accuracy / log-prob per split, on paraphrases, and on mixed prompts, for M0, M1 (Mr)."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds)


def _read(th: BehaviorPressureThresholds, blocker, trigger, leak, table) -> tuple[str, str]:
    if blocker:
        return "inconclusive", blocker
    m1 = table["M1"]
    found = []
    if np.isfinite(trigger) and trigger > th.trigger_min:
        found.append(f"a forget fact in the context costs retain answers {trigger:.0%} more "
                     "than in M0 (trigger)")
    if np.isfinite(leak) and leak > th.leak_min:
        found.append(f"paraphrases recover forget answers ({m1['forget_para_acc']:.0%} vs "
                     f"{m1['forget_acc']:.0%} canonical)")
    if found:
        return "suppression-signature", "; ".join(found)
    return "removal-consistent", ("forgetting holds under paraphrase and forget context leaves "
                                  "retain answers alone")

