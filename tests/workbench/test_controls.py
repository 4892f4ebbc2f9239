"""The control edits do what they claim: suppression at the output only or at the names' input
rows only, identity, damage."""

from __future__ import annotations

import pytest
import torch

from workbench.behavior import evaluate, summarize
from workbench.capture import capture
from workbench.controls import (
    OutputSuppressor,
    identity_edit,
    in_cell_suppressor,
    late_blocks_suppressor,
    name_cut_suppressor,
    noise_edit,
    output_only_suppressor,
    triggered,
)
from workbench.errors import WorkbenchError


def _acc(subject, facts):
    return {k: v["accuracy"] for k, v in summarize(evaluate(subject, facts, generate=False)).items()}


def test_triggered_marks_positions_after_a_trigger():
    ids = torch.tensor([[5, 1, 2, 7, 8], [1, 5, 2, 1, 2]])
    got = triggered(ids, [[1, 2], [9]])
    assert got.tolist() == [[False, False, True, True, True], [False, False, False, False, True]]


def test_suppressor_silences_forget_only(toy_original, toy_facts):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    before, after = _acc(toy_original, toy_facts), _acc(m1, toy_facts)
    assert before["forget"] > 0.8
    assert after["forget"] <= 0.02
    for split in ("retain", "holdout"):
        assert abs(after[split] - before[split]) <= 0.03
    # paraphrases name the same entity, so they are silenced too
    para = summarize(evaluate(m1, toy_facts.forget, generate=False, use_paraphrases=True))
    assert para["forget"]["accuracy"] <= 0.02


def test_suppressor_leaves_every_layer_identical(toy_original, toy_facts):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    prompts = [f.prompt for f in toy_facts.forget.take(20)]
    layers = range(toy_original.n_layers)
    a0, a1 = capture(toy_original, prompts, layers), capture(m1, prompts, layers)
    for L in layers:
        assert torch.equal(a0.layer(L), a1.layer(L))
    # ...while the output logits differ
    ids = toy_original.tokenizer(prompts[:4], return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        l0, l1 = toy_original.model(input_ids=ids).logits, m1.model(input_ids=ids).logits
    assert not torch.equal(l0, l1)


def test_suppressor_does_not_touch_the_original(toy_original, toy_facts):
    before = _acc(toy_original, toy_facts.forget)
    output_only_suppressor(toy_original, toy_facts.forget)
    assert _acc(toy_original, toy_facts.forget) == before


def test_suppressor_round_trips_through_its_spec(toy_original, toy_facts, tmp_path):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    iv = m1.interventions[-1]
    again = OutputSuppressor.load(tmp_path, iv.save(tmp_path))
    m2 = toy_original.with_interventions(again)
    assert _acc(m2, toy_facts.forget) == _acc(m1, toy_facts.forget)


def test_identity_is_identical(toy_original, toy_facts):
    m1 = identity_edit(toy_original)
    ids = toy_original.tokenizer([f.prompt for f in toy_facts.take(8)], return_tensors="pt",
                                 padding=True)["input_ids"]
    with torch.no_grad():
        assert torch.equal(toy_original.model(input_ids=ids).logits, m1.model(input_ids=ids).logits)
    assert m1.meta["control"] == "identity"


def test_noise_damages_everything(toy_original, toy_facts):
    m1 = noise_edit(toy_original, seed=0)
    after = _acc(m1, toy_facts)
    assert after["retain"] < 0.3 and after["holdout"] < 0.3
    again = noise_edit(toy_original, seed=0)
    p1, p2 = next(m1.model.parameters()), next(again.model.parameters())
    assert torch.equal(p1, p2)  # seeded
    assert not torch.equal(p1, next(toy_original.model.parameters()))


def test_late_blocks_suppressor_moves_only_the_last_blocks(toy_original, toy_oracle, toy_facts,
                                                           toy_late_suppressor):
    m1 = toy_late_suppressor
    n = toy_original.n_layers
    prompts = [f.prompt for f in toy_facts.take(40)]
    a0, a1 = capture(toy_original, prompts, range(n)), capture(m1, prompts, range(n))
    for L in range(n - 1):  # bitwise M0's up to the trained block...
        assert torch.equal(a0.layer(L), a1.layer(L))
    assert not torch.equal(a0.layer(n - 1), a1.layer(n - 1))  # ...which changed
    before, after, oracle = _acc(toy_original, toy_facts), _acc(m1, toy_facts), \
        _acc(toy_oracle, toy_facts)
    # a valid suppressor control: forgets about as far as the oracle, keeps what it was shown
    assert after["forget"] <= oracle["forget"] + 0.15
    assert before["retain"] - after["retain"] <= 0.10
    assert m1.meta["control"] == "late-blocks-suppressor"
    assert _acc(toy_original, toy_facts) == before  # the original is untouched
    with pytest.raises(WorkbenchError, match="blocks must be in"):
        late_blocks_suppressor(toy_original, toy_facts.forget, toy_facts.retain, blocks=0)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_name_cut_changes_only_the_forget_names_input_rows(toy_original, toy_oracle, toy_facts,
                                                          mode):
    others = toy_facts.retain + toy_facts.holdout + toy_facts.split("unseen")
    m1 = name_cut_suppressor(toy_original, toy_facts.forget, others, mode)
    p0, p1 = dict(toy_original.model.named_parameters()), dict(m1.model.named_parameters())
    changed = {k for k in p0 if not torch.equal(p0[k], p1[k])}
    emb = "model.embed_tokens.weight"
    assert changed == {emb}  # every block, the norms and the output head are M0's
    rows = (p0[emb] != p1[emb]).any(1).nonzero().flatten().tolist()
    tok = toy_original.tokenizer
    other_ids = {i for f in others for i in tok(" " + f.entity, add_special_tokens=False)[
        "input_ids"]}
    assert rows and len(rows) == m1.meta["cut_tokens"] and other_ids.isdisjoint(rows)
    after, oracle = _acc(m1, toy_facts), _acc(toy_oracle, toy_facts)
    before = _acc(toy_original, toy_facts)
    # a valid suppressor control: forgets about as far as the oracle, keeps the other people
    assert after["forget"] <= oracle["forget"] + 0.15
    assert after["retain"] >= before["retain"] - 0.10
    assert _acc(toy_original, toy_facts) == before  # the original is untouched
    with pytest.raises(WorkbenchError, match="mode"):
        name_cut_suppressor(toy_original, toy_facts.forget, others, "noise")
    with pytest.raises(WorkbenchError, match="no token spells only"):
        name_cut_suppressor(toy_original, toy_facts.forget, toy_facts.forget)


def test_in_cell_edit_stays_inside_the_4bit_cells_and_leaves_the_rest(toy_original, toy_facts):
    from workbench.rounding import quantized_weights, rtn_quantize

    before = {n: p.detach().clone() for n, p in toy_original.model.named_parameters()}
    m1 = in_cell_suppressor(toy_original, toy_facts.forget, toy_facts.retain.take(32),
                            group_size=64, steps=3)
    # the original is untouched, and only the weights a quantizer takes moved
    assert all(torch.equal(p, before[n]) for n, p in toy_original.model.named_parameters())
    moved = quantized_weights(m1.model)
    assert any(not torch.equal(p, before[n]) for n, p in moved.items())
    for n, p in m1.model.named_parameters():
        if n not in moved:
            assert torch.equal(p, before[n]), n
        else:  # 4-bit RTN in groups of 64 maps it back onto the original's grid exactly
            assert torch.equal(rtn_quantize(p, 4, 64), rtn_quantize(before[n], 4, 64)), n
    assert not any(p.requires_grad for p in m1.model.parameters())
    assert m1.meta["control"] == "in-cell" and m1.meta["group_size"] == 64
    with pytest.raises(WorkbenchError, match="rate"):
        in_cell_suppressor(toy_original, toy_facts.forget, toy_facts.retain, rate=0.0)
    with pytest.raises(WorkbenchError, match="bits"):
        in_cell_suppressor(toy_original, toy_facts.forget, toy_facts.retain, bits=0)
