"""Membership (Min-K%++): the score's mechanics, and known truth on the toy world."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apps.figures import draw
from probes.base import Finding
from probes.membership import MembershipThresholds, auc, membership, min_k_plus_plus
from workbench.batching import encode
from workbench.controls import identity_edit, output_only_suppressor
from workbench.facts import FactSet

PROMPTS = ["The capital of France is", "Hello there my", "A B C D E F", "x"]
ANSWERS = [" Paris", " friend of mine and yours", " G", " y z"]


def _naive(subject, prompt: str, answer: str, k: float, tokens: str) -> float:
    """Min-K%++ of one text, unbatched, from the definition."""
    b = encode(subject.tokenizer, [prompt], [answer])
    with torch.no_grad():
        logp = subject.model(input_ids=b.input_ids).logits[0, :-1].double().log_softmax(-1)
    ids = b.input_ids[0, 1:]
    zs = []
    for t in range(len(ids)):
        if tokens == "answer" and not b.answer_mask[0, t]:
            continue
        p = logp[t].exp()
        mu = float((p * logp[t]).sum())
        sigma = math.sqrt(float((p * (logp[t] - mu) ** 2).sum()))
        zs.append((float(logp[t, ids[t]]) - mu) / sigma)
    zs.sort()
    n = max(1, math.ceil(k * len(zs)))
    return sum(zs[:n]) / n


@pytest.mark.parametrize("tokens", ["answer", "text"])
@pytest.mark.parametrize("k", [0.2, 1.0])
def test_min_k_plus_plus_matches_its_definition(tiny, tokens, k):
    got = min_k_plus_plus(tiny, PROMPTS, ANSWERS, k=k, tokens=tokens, batch_size=3)
    want = [_naive(tiny, p, a, k, tokens) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_min_k_lowest_fraction(tiny):
    low = min_k_plus_plus(tiny, PROMPTS, ANSWERS, k=0.01, tokens="text")
    mean = min_k_plus_plus(tiny, PROMPTS, ANSWERS, k=1.0, tokens="text")
    assert (low <= mean + 1e-6).all() and (low < mean).any()
    with pytest.raises(Exception, match="k must be"):
        min_k_plus_plus(tiny, PROMPTS, ANSWERS, k=0.0)


def test_auc_orientation():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0


# ----- known truth on the toy world ------------------------------------------------------------

@pytest.fixture(scope="module")
def oracle_finding(toy_original, toy_oracle, toy_facts):
    return membership(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)


def test_original_flags_members_and_oracle_does_not(oracle_finding):
    """M0 tells the forget facts (members) from never-seen ones; the oracle, which never saw
    them, sits near chance; the oracle as M1 reads as removal."""
    f = oracle_finding
    assert f.scores["auc_M0"] >= 0.75
    assert abs(f.scores["auc_Mr"] - 0.5) < 0.15
    assert f.scores["auc_M0"] - f.scores["auc_Mr"] >= MembershipThresholds().min_signal
    assert f.reading == "removal-consistent", f.reason
    assert f.scores["privleak"] == 0.0
    assert Finding.from_json(f.to_json()) == f and draw(f) is not None


def test_membership_does_not_modify_inputs_and_is_deterministic(toy_original, toy_oracle,
                                                                 toy_facts, oracle_finding):
    before = {k: v.clone() for k, v in toy_oracle.model.state_dict().items()}
    again = membership(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)
    assert all(torch.equal(v, toy_oracle.model.state_dict()[k]) for k, v in before.items())
    assert again.scores == oracle_finding.scores
    np.testing.assert_array_equal(again.arrays["score_forget_M1"],
                                  oracle_finding.arrays["score_forget_M1"])


def test_identity_still_answers(toy_original, toy_facts):
    f = membership(toy_original, identity_edit(toy_original), toy_facts)
    assert f.reading == "inconclusive" and "still answers" in f.reason


def test_without_unseen_facts_it_does_not_apply(toy_original, toy_oracle, toy_facts):
    known = FactSet(tuple(f for f in toy_facts if f.split != "unseen"), "known")
    f = membership(toy_original, toy_oracle, known, oracle=toy_oracle)
    assert f.reading == "inconclusive" and "does not apply" in f.reason


def test_output_only_suppressor(toy_original, toy_oracle, toy_facts):
    """By construction the hook fires only after a forget entity and only lowers the forget
    answers' logits: never-seen facts score exactly as under M0, every forget fact scores lower,
    so M1's AUC falls below M0's (what it then reads against the oracle is reported, not fixed:
    it depends on how far under the never-seen facts the hook pushes the answers)."""
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    f = membership(toy_original, m1, toy_facts, oracle=toy_oracle)
    np.testing.assert_array_equal(f.arrays["score_unseen_M1"], f.arrays["score_unseen_M0"])
    assert (f.arrays["score_forget_M1"] < f.arrays["score_forget_M0"]).all()
    assert f.scores["auc_M1"] < f.scores["auc_M0"]
