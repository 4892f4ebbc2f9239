"""The relearning attack (RTT and its entity variant) on known truth in the toy world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import snapshot

import probes.common as common
import probes.relearning as relearning_module
from apps.figures import draw
from probes import available
from probes.base import READINGS, Finding
from probes.relearning import (
    RelearningThresholds,
    Setup,
    entity_split,
    relearn_curve,
    relearning,
    resolve_method,
    rtt_split,
    trainable,
)
from workbench.controls import identity_edit, output_only_suppressor
from workbench.errors import WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.models import Subject

TH = RelearningThresholds()
# The oracle relearning its own forget facts may differ from the M0-on-unseen floor by this much:
# both are "recover what was never stored", measured on different facts and models.
FLOOR_MARGIN = 0.15


def shared_shift(subject: Subject, forget: FactSet, scale: float = 2.0, seed: int = 0) -> Subject:
    """A suppressor by construction: one random vector (`scale` x the rows' mean norm) added to
    the embedding rows of every forget name's tokens. Every other weight is M0's and subtracting
    that one vector restores M0 exactly, so every fact is still stored."""
    edited = subject.clone(source=f"{subject.source}+shared-shift")
    emb = edited.model.get_input_embeddings().weight
    ids = sorted({i for f in forget for i in subject.tokenizer(
        f.entity, add_special_tokens=False)["input_ids"]})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        v = torch.randn(emb.shape[1], generator=gen)
        emb[ids] += (scale * emb[ids].norm(dim=1).mean() * v / v.norm()).to(emb.dtype)
    return edited



def same_state(subject: Subject, before: dict[str, torch.Tensor]) -> bool:
    now = subject.model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


@pytest.fixture(scope="module")
def shifted(toy_original, toy_facts):
    return shared_shift(toy_original, toy_facts.forget)


@pytest.fixture(scope="module")
def on_shifted(toy_original, shifted, toy_facts, toy_oracle):
    return relearning(toy_original, shifted, toy_facts, oracle=toy_oracle)


# ----- splits -----------------------------------------------------------------------------------

def test_folds_share_no_entity_and_no_relation(toy_facts):
    forget = toy_facts.forget
    rtt = rtt_split(forget, seed=0)
    assert rtt.how == "entity" and len(rtt.train) + len(rtt.test) == len(forget)
    assert not {f.entity for f in rtt.train} & {f.entity for f in rtt.test}
    ent = entity_split(forget, seed=0)
    assert ent is not None and ent.how == "relation"
    assert {f.entity for f in ent.test} <= {f.entity for f in ent.train}
    assert not {(f.entity, f.relation) for f in ent.train} & {(f.entity, f.relation)
                                                              for f in ent.test}
    assert rtt_split(forget, seed=1).test != rtt.test  # the seed picks the folds


def test_facts_without_entities_fall_back_to_a_random_split():
    facts = FactSet(tuple(Fact(f"f{i}", f"Prompt {i} is", f" a{i}", "forget") for i in range(9)))
    split = rtt_split(facts, seed=0)
    assert split.how == "random" and len(split.train) and len(split.test)
    assert not {f.id for f in split.train} & {f.id for f in split.test}
    assert entity_split(facts) is None


def test_bad_setups_are_errors(toy_original, shifted, toy_facts):
    with pytest.raises(WorkbenchError, match="positive learning rates"):
        Setup(lrs=(0.0,))
    with pytest.raises(WorkbenchError, match="variants must be among"):
        relearning(toy_original, shifted, toy_facts, variants=("nope",))
    with pytest.raises(WorkbenchError, match="method must be one of .*'nope'"):
        relearning(toy_original, shifted, toy_facts, method="nope")
    with pytest.raises(WorkbenchError, match="rank must be >= 1"):
        Setup(lrs=(1e-3,), method="lora", rank=0)


# ----- LoRA relearning --------------------------------------------------------------------------

def test_auto_method_is_full_for_small_models_and_lora_for_large(toy_original, monkeypatch):
    assert resolve_method(toy_original) == "full"  # the toy world: what its calibration used
    assert resolve_method(toy_original, "lora") == "lora"
    monkeypatch.setattr(relearning_module, "SMALL_MODEL", 1)
    assert resolve_method(toy_original) == "lora"
    assert relearning_module.default_lrs(toy_original, "lora") != relearning_module.default_lrs(
        toy_original, "full")


def test_lora_trains_adapters_over_the_models_own_weights(shifted):
    """No weight is copied: the stand-in's base tensors are the subject's, only the adapters
    train, a step leaves the subject's weights and flags as they were, and the next stand-in
    starts again from the subject (adapters at zero: the same logits)."""
    before = snapshot(shifted)
    flags = [p.requires_grad for p in shifted.model.parameters()]
    own = {p.data_ptr() for p in shifted.model.parameters()}
    setup = Setup(lrs=(1e-2,), method="lora", rank=4)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        plain = shifted.model(input_ids=ids).logits
    for _ in range(2):
        with trainable(shifted, setup, seed=0) as (model, params):
            assert params and all("lora_" in n for n, p in model.named_parameters()
                                  if p.requires_grad)
            base = [p for n, p in model.named_parameters() if "lora_" not in n]
            assert {p.data_ptr() for p in base} <= own  # shared, not copied
            assert sum(p.numel() for p in params) < 0.5 * sum(p.numel() for p in base)
            with torch.no_grad():
                torch.testing.assert_close(model(input_ids=ids).logits, plain)  # B starts at 0
            loss = model(input_ids=ids).logits.float().logsumexp(-1).mean()
            loss.backward()
            torch.optim.SGD(params, lr=1.0).step()
            with torch.no_grad():
                assert not torch.allclose(model(input_ids=ids).logits, plain)
    assert same_state(shifted, before)
    assert flags == [p.requires_grad for p in shifted.model.parameters()]


def test_micro_batched_step_takes_the_whole_batchs_step(toy_original, toy_facts):
    """Gradient accumulation over micro-batches (what a large model's relearning runs, to bound
    its backward's memory) moves the weights as the whole batch's step does."""
    b = relearning_module._encode(toy_original, toy_facts.forget, True)
    b = b.rows(torch.arange(12))
    after = []
    for micro in (None, 5):
        model = toy_original.clone().model
        model.requires_grad_(True)
        opt = torch.optim.SGD(model.parameters(), lr=1e3)  # M0 knows these: small gradients
        loss = relearning_module.relearn_step(model, opt, b, micro)
        after.append((loss, [p.detach().clone() for p in model.parameters()]))
    assert after[0][0] == pytest.approx(after[1][0], rel=1e-5)
    moved = max(float((p - q.detach()).abs().max()) for p, q in zip(
        after[0][1], toy_original.model.parameters(), strict=True))
    assert moved > 0.1
    for p, q in zip(after[0][1], after[1][1], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5 * moved)


def test_lora_relearning_recovers_the_shift_more_than_the_oracle(toy_original, shifted,
                                                                  toy_facts, toy_oracle):
    """The same attack with LoRA adapters (at toy learning rates): the shifted suppressor comes
    back further than the oracle does; the oracle against itself is the floor exactly."""
    f = relearning(toy_original, shifted, toy_facts, oracle=toy_oracle, method="lora",
                   lrs=(3e-3, 1e-2))
    assert f.meta["method"] == "lora" and f.meta["rank"] == 8
    assert f.scores["recovery_over_floor"] >= TH.recovered, f.reason
    same = relearning(toy_original, toy_oracle, toy_facts, oracle=toy_oracle, method="lora",
                      lrs=(3e-3, 1e-2))
    assert same.scores["recovery_over_floor"] == 0.0


# ----- known truth ------------------------------------------------------------------------------

def test_registered_with_a_figure_and_round_trips(on_shifted):
    assert "relearning" in available()
    assert Finding.from_json(on_shifted.to_json()) == on_shifted
    assert draw(on_shifted) is not None
    n_lrs, n_marks = len(on_shifted.meta["lrs"]), len(on_shifted.arrays["rtt_steps"])
    for key in ("rtt_acc_M1", "rtt_recovery_floor", "entity_acc_M1", "entity_recovery_floor"):
        assert on_shifted.arrays[key].shape == (n_lrs, n_marks)


def test_shared_shift_suppressor_is_recovered(on_shifted):
    f = on_shifted
    assert f.reading == "suppression-signature", f.reason
    assert f.scores["recovery_over_floor"] >= TH.recovered
    best = max(("rtt", "entity"), key=lambda v: f.scores[f"{v}_over_floor"])
    assert np.isfinite(f.scores[f"{best}_steps_to_recover"])
    assert f.meta["floor"] == "oracle" and not f.meta["hooks_attached"]


def test_last_block_suppressor_comes_back_more_than_on_the_oracle(toy_original, toy_oracle,
                                                                    toy_facts, toy_late_suppressor):
    """Only the last block was trained, so every earlier activation is M0's: relearning other
    forget people brings held-out ones back more than it does on the oracle. Not always past the
    suppression threshold (on some world seeds it reads in between); `activation_patching` is
    the attack that must catch this control (tests/probes/test_patching.py)."""
    f = relearning(toy_original, toy_late_suppressor, toy_facts, oracle=toy_oracle)
    assert f.reading != "removal-consistent", f.reason
    assert f.scores["recovery_over_floor"] >= 0.1, f.reason


def test_oracle_is_not_recovered_beyond_the_floor(toy_original, toy_oracle, toy_facts):
    # the oracle as M1 with no floor model given: the floor is M0 relearning unseen people
    f = relearning(toy_original, toy_oracle, toy_facts)
    assert f.meta["floor"] == "unseen" and "weaker floor" in f.meta["floor_name"]
    assert f.reading != "suppression-signature", f.reason
    for v in ("rtt", "entity"):
        assert f.scores[f"{v}_recovery_M1"] - f.scores[f"{v}_recovery_floor"] <= FLOOR_MARGIN
    # ...and against itself as the floor: the identical procedure gives identical curves
    same = relearning(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)
    assert same.reading == "removal-consistent" and same.scores["recovery_over_floor"] == 0.0


def test_identity_still_answers(toy_original, toy_oracle, toy_facts):
    f = relearning(toy_original, identity_edit(toy_original), toy_facts, oracle=toy_oracle)
    assert f.reading == "inconclusive" and "still answers" in f.reason
    assert draw(f) is None


def test_hooks_are_relearned_with_the_hook_attached_but_not_read(toy_original, toy_oracle,
                                                                 toy_facts):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    before = snapshot(m1)
    f = relearning(toy_original, m1, toy_facts, oracle=toy_oracle, variants=("rtt",))
    assert f.reading == "inconclusive" and "does not apply" in f.reason
    assert f.meta["hooks_attached"] and "rtt_acc_M1" in f.arrays
    assert same_state(m1, before) and same_state(toy_original, before)  # hooks share M0's weights


def test_deterministic_and_inputs_untouched(toy_original, toy_oracle, shifted, toy_facts,
                                            monkeypatch):
    subjects = (toy_original, shifted, toy_oracle)
    before = [snapshot(s) for s in subjects]
    grads = [[p.requires_grad for p in s.model.parameters()] for s in subjects]
    runs = []
    for _ in range(2):
        monkeypatch.setattr(common, "_MEMO", {})  # recompute, do not reuse the first curves
        runs.append(relearning(toy_original, shifted, toy_facts, oracle=toy_oracle, steps=4,
                               eval_every=2, seed=3))
    runs[1].seconds = runs[0].seconds
    assert runs[0] == runs[1]
    assert all(same_state(s, b) for s, b in zip(subjects, before, strict=True))
    assert grads == [[p.requires_grad for p in s.model.parameters()] for s in subjects]


def test_curve_starts_at_the_model_itself(shifted, toy_facts):
    split = rtt_split(toy_facts.forget)
    acc = relearn_curve(shifted, split, Setup(lrs=(1e-3,), steps=2, eval_every=1))
    ids = {f.id for f in split.test}
    start = common.exact_match(shifted, FactSet(tuple(f for f in toy_facts.forget
                                                      if f.id in ids))).mean()
    assert acc.shape == (1, 3) and acc[0, 0] == pytest.approx(start)


@pytest.mark.slow
def test_ga_default_edit_reads_something_and_runs_on_weights(toy_original, toy_oracle,
                                                             toy_facts):
    """What ga's default edit reads is a measurement, not a truth; by construction it is a weight
    edit that forgets, so both variants run on it, and each recovery counts from M1 itself."""
    from workbench.operators import get_operator, make_config

    edit = get_operator("ga").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                    make_config("ga"))
    f = relearning(toy_original, edit.subject, toy_facts, oracle=toy_oracle)
    assert f.reading in READINGS and not f.meta["hooks_attached"]
    for v in ("rtt", "entity"):
        assert f.scores[f"{v}_recovery_M1"] >= 0.0  # step 0 is M1 itself
        assert np.isfinite(f.scores[f"{v}_recovery_floor"])
