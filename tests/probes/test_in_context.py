"""In-context recovery on the toy world's known-truth edits: the oracle reads at its floor, the
identity still answers, the output-only hook holds in context (by construction); the prompts never
state the question's own fact; inputs stay untouched and runs repeat exactly."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import assert_pure_and_deterministic

from probes.in_context import InContextThresholds, context_prompts, in_context_recovery
from workbench.batching import encode
from workbench.controls import identity_edit, output_only_suppressor, triggered

TH = InContextThresholds()


@pytest.fixture(scope="module")
def suppressor(toy_original, toy_facts):
    return output_only_suppressor(toy_original, toy_facts.forget)




def test_oracle_reads_at_its_own_floor(toy_original, toy_oracle, toy_facts):
    f = in_context_recovery(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)
    assert f.reading != "suppression-signature", f.reason
    assert abs(f.scores["recovery"] - f.scores["floor_recovery"]) <= TH.floor_margin


def test_identity_still_answers(toy_original, toy_oracle, toy_facts):
    f = in_context_recovery(toy_original, identity_edit(toy_original), toy_facts, toy_oracle)
    assert f.reading == "inconclusive" and "still answers" in f.reason


def test_output_only_hook_holds_in_context(toy_original, toy_oracle, toy_facts, suppressor):
    """By construction the hook fires once any forget entity has appeared, and every question
    names its own forget entity: the answer's first token stays pushed down whatever the prefix,
    so nothing comes back, and the finding says the hook, not removal, explains it."""
    f = in_context_recovery(toy_original, suppressor, toy_facts, oracle=toy_oracle)
    for v in f.meta["variants"]:
        assert f.scores[f"ctx_{v}_acc_M1"] == 0.0
        assert f.scores[f"recovery_{v}"] == 0.0
    assert f.reading == "inconclusive" and "inference-time hooks" in f.reason
    iv = suppressor.interventions[-1]
    for v, pool in (("forget", toy_facts.forget), ("retain", toy_facts.retain)):
        cp = context_prompts(toy_original.tokenizer, toy_facts.forget, pool, 3, seed=1,
                             max_positions=64, same_relation=v == "retain")
        b = encode(toy_original.tokenizer, cp.prompts)
        fired = triggered(b.input_ids, iv.triggers)[torch.arange(len(cp.prompts)), b.last]
        assert fired.all()


@pytest.mark.parametrize("pool", ["forget", "retain"])
def test_prompts_never_state_the_question(toy_original, toy_facts, pool):
    questions = toy_facts.forget
    cp = context_prompts(toy_original.tokenizer, questions, toy_facts.split(pool), 3, seed=0,
                         max_positions=64, same_relation=pool == "retain")
    by_id = {f.id: f for f in toy_facts}
    assert cp.questions == [q.id for q in questions]
    for q, prompt, used in zip(questions, cp.prompts, cp.prefix_ids, strict=True):
        assert prompt.endswith(q.prompt) and q.id not in used and len(used) == 3
        prefix = prompt[: -len(q.prompt)]
        assert all(by_id[u].entity != q.entity for u in used)
        assert q.entity not in prefix
        assert not re.search(rf"\b{re.escape(q.answer.strip())}\b", prefix)
        if pool == "retain":  # same relation first (the toy world has plenty)
            assert all(by_id[u].relation == q.relation for u in used)
        assert len(toy_original.tokenizer(prompt + q.answer)["input_ids"]) <= 64


def test_prefix_is_cut_to_fit_the_positions(toy_original, toy_facts):
    q = toy_facts.forget.take(4)
    cp = context_prompts(toy_original.tokenizer, q, toy_facts.retain, 5, max_positions=16)
    assert all(len(u) < 5 for u in cp.prefix_ids)
    assert all(len(toy_original.tokenizer(p + a)["input_ids"]) <= 16
               for p, a in zip(cp.prompts, cp.answers, strict=True))


def test_inputs_untouched_and_deterministic(toy_original, toy_oracle, toy_facts, suppressor):
    assert_pure_and_deterministic(in_context_recovery, (toy_original, suppressor, toy_oracle), toy_original, suppressor,
                                  toy_facts, oracle=toy_oracle, seed=5)
