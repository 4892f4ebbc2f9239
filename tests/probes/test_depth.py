"""The Unlearning Depth Score (probes.depth) on known truth, and the patch engine at answer
positions against a naive loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_subject

from probes.depth import aggregate, unlearning_depth_score
from probes.patch_engine import patch
from probes.patching import activation_patching
from workbench.batching import encode
from workbench.errors import LayerError
from workbench.models import decoder_layers

PROMPTS = ["The capital of France is", "Hello there my", "A B C D E F", "x"]
ANSWERS = [" Paris", " friend of mine", " G", " y z"]


# ----- the engine at teacher-forced answer positions (tiny random models) -------------------

def naive_resid_post(base, source, prompts, answers, layer: int, backs) -> np.ndarray:
    """Answer log-prob of `base` with `source`'s block-`layer` output patched at each row's
    positions last - back (all at once), one full forward pass, independent of the engine."""
    b = encode(base.tokenizer, prompts, answers)
    got = {}
    h = decoder_layers(source.model)[layer].register_forward_hook(
        lambda m, a, o: got.setdefault("h", (o[0] if isinstance(o, tuple) else o).clone()))
    with torch.no_grad():
        source.model(input_ids=b.input_ids)
    h.remove()

    def put(x):
        x = x.clone()
        for r, bs in enumerate(backs):
            for k in bs:
                p = int(b.last[r]) - k
                x[r, p] = got["h"][r, p]
        return x

    h = decoder_layers(base.model)[layer].register_forward_hook(
        lambda m, a, o: (put(o[0]), *o[1:]) if isinstance(o, tuple) else put(o))
    with torch.no_grad():
        logits = base.model(input_ids=b.input_ids).logits
    h.remove()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, b.input_ids[:, 1:, None])[..., 0]
    return (logp * b.answer_mask[:, :-1]).sum(1).numpy()


@pytest.fixture
def pair(bundled):
    return (make_tiny_subject(bundled.tokenizer, n_layers=3, seed=0),
            make_tiny_subject(bundled.tokenizer, n_layers=3, seed=1))


def test_patching_answer_positions_equals_naive_loop(pair):
    m0, m1 = pair
    b = encode(m0.tokenizer, PROMPTS, ANSWERS)
    n_ans = (b.lengths - b.last - 1).tolist()
    assert max(n_ans) > 1  # some answers span several tokens: positions after the prompt
    backs = [tuple(range(0, -n, -1)) for n in n_ans]
    rows = [(f, tuple((L, "resid_post", k) for k in backs[f])) for L in range(3)
            for f in range(len(PROMPTS))]
    run = patch(m1, m0, PROMPTS, ANSWERS, rows, batch_size=5)
    ref = np.concatenate([naive_resid_post(m1, m0, PROMPTS, ANSWERS, L, backs) for L in range(3)])
    assert run.method == "full"
    assert np.abs(run.logprobs - ref).max() < 1e-4
    assert np.abs(ref - np.tile(run.base, 3)).max() > 1e-2  # the patches do something
    # one answer position alone, and a mix of prompt and answer positions
    one = patch(m1, m0, PROMPTS[1:2], ANSWERS[1:2], [(0, ((2, "resid_post", -1),))])
    assert abs(one.logprobs[0] - naive_resid_post(m1, m0, PROMPTS[1:2], ANSWERS[1:2], 2,
                                                  [(-1,)])[0]) < 1e-4
    mix = patch(m1, m0, PROMPTS[1:2], ANSWERS[1:2], [(0, ((1, "resid_post", 2),
                                                          (1, "resid_post", -2)))])
    assert abs(mix.logprobs[0] - naive_resid_post(m1, m0, PROMPTS[1:2], ANSWERS[1:2], 1,
                                                  [(2, -2)])[0]) < 1e-4


def test_patching_rejects_positions_outside_the_tokens(pair):
    m0, m1 = pair
    n = len(m0.tokenizer(ANSWERS[0], add_special_tokens=False)["input_ids"])
    with pytest.raises(LayerError, match="invalid patch cell"):
        patch(m1, m0, PROMPTS, ANSWERS, [(0, ((0, "resid_post", -n - 1),))])
    with pytest.raises(LayerError, match="invalid patch cell"):
        patch(m1, m0, PROMPTS, ANSWERS, [(3, ((0, "resid_post", 5),))])  # "x": a 1-2 token prompt


# ----- the aggregation ----------------------------------------------------------------------

def test_aggregation_weights_ke_blocks_by_stage_one_and_clips():
    s1 = np.array([[0.2, 0.02, 1.0], [0.01, 0.0, -3.0]])
    s2 = np.array([[0.1, 5.0, 2.0], [9.0, 9.0, 9.0]])
    d = aggregate(s1, s2, tau=0.05)
    assert d.ke.tolist() == [[True, False, True], [False, False, False]]
    assert d.by_fact[0] == pytest.approx((0.2 * 0.5 + 1.0 * 1.0) / 1.2)
    assert np.isnan(d.by_fact[1])  # no KE block: left out, as in the reference
    assert d.score == pytest.approx(d.by_fact[0])
    assert np.isnan(aggregate(s1[1:], s2[1:]).score)  # nothing encoded: no score, not zero


def test_uds_stays_in_the_unit_interval():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = aggregate(rng.normal(0.2, 1, (7, 5)), rng.normal(0, 3, (7, 5)))
        assert 0 <= d.score <= 1
        ok = np.isfinite(d.by_fact)
        assert ((d.by_fact[ok] >= 0) & (d.by_fact[ok] <= 1)).all()
        r = d.ratio[d.ke]
        assert ((r >= 0) & (r <= 1)).all() and np.isnan(d.ratio[~d.ke]).all()


# ----- known truth on the toy world ---------------------------------------------------------

def test_oracle_scores_one_and_the_original_zero(toy_original, toy_oracle, toy_facts):
    from workbench.controls import identity_edit

    oracle = unlearning_depth_score(toy_original, toy_oracle, toy_oracle, toy_facts)
    assert oracle.score == pytest.approx(1.0, abs=1e-6)
    assert oracle.ke.any(1).mean() > 0.5  # most forget facts have knowledge-encoding blocks
    same = unlearning_depth_score(toy_original, identity_edit(toy_original), toy_oracle, toy_facts)
    assert same.score == pytest.approx(0.0, abs=1e-4)
    assert np.array_equal(same.ke, oracle.ke)  # stage 1 does not depend on M1
    for d in (oracle, same):
        per = d.by_layer()
        assert per["ke_fraction"].shape == (toy_original.n_layers,)
        assert ((per["ke_fraction"] >= 0) & (per["ke_fraction"] <= 1)).all()


def test_output_only_suppressor_scores_zero_and_noise_in_range(toy_original, toy_oracle,
                                                               toy_facts):
    from workbench.controls import noise_edit, output_only_suppressor

    sup = output_only_suppressor(toy_original, toy_facts.forget)
    d = unlearning_depth_score(toy_original, sup, toy_oracle, toy_facts)
    assert d.score == pytest.approx(0.0, abs=1e-4)  # every activation is M0's own
    noisy = unlearning_depth_score(toy_original, noise_edit(toy_original, 1.0), toy_oracle,
                                   toy_facts)
    assert 0 <= noisy.score <= 1


def test_entity_positions_keep_the_known_cases(toy_original, toy_oracle, toy_facts):
    from workbench.controls import identity_edit

    kw = {"positions": "entity"}
    oracle = unlearning_depth_score(toy_original, toy_oracle, toy_oracle, toy_facts, **kw)
    same = unlearning_depth_score(toy_original, identity_edit(toy_original), toy_oracle,
                                  toy_facts, **kw)
    assert oracle.score == pytest.approx(1.0, abs=1e-6)
    assert same.score == pytest.approx(0.0, abs=1e-4)
    # the last block's output at the entity's tokens reaches no answer logit
    assert np.abs(oracle.s1[:, -1]).max() < 1e-4 and not oracle.ke[:, -1].any()


def test_activation_patching_records_uds_or_says_why_not(toy_original, toy_oracle, toy_facts):
    from apps.figures import draw
    from probes.base import Finding
    from workbench.controls import output_only_suppressor

    sup = output_only_suppressor(toy_original, toy_facts.forget)
    with_oracle = activation_patching(toy_original, sup, toy_facts, oracle=toy_oracle)
    n, nf = toy_original.n_layers, len(toy_facts.forget)
    assert with_oracle.scores["uds"] == pytest.approx(0.0, abs=1e-4)
    for k in ("uds_s1", "uds_s2", "uds_ratio", "uds_ke_fraction"):
        assert with_oracle.arrays[k].shape == (n,)
    assert with_oracle.arrays["uds_ke_by_fact"].shape == (nf, n)
    assert with_oracle.arrays["uds_by_fact"].shape == (nf,)
    assert "uds" not in with_oracle.meta["unavailable"]
    back = Finding.from_json(with_oracle.to_json())
    assert back == with_oracle and draw(back) is not None
    alone = activation_patching(toy_original, sup, toy_facts)
    assert "uds" not in alone.scores and "oracle" in alone.meta["unavailable"]["uds"]
