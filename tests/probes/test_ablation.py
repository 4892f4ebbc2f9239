"""Directional ablation on the toy world's known-truth edits: the oracle reads at its floor, the
identity still answers, a steering hook (which adds a fixed direction) is undone, an output-only
hook leaves no direction to ablate; inputs stay untouched and runs repeat exactly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_pure_and_deterministic

from probes.ablation import (
    AblationThresholds,
    ablated_exact,
    directional_ablation,
    pick_layers,
    split_by_entity,
)
from workbench.controls import identity_edit, output_only_suppressor
from workbench.operators.base import get_operator, make_config

TH = AblationThresholds()


@pytest.fixture(scope="module")
def steered(toy_original, toy_facts):
    """The `steer` operator, mode add: a gated hook adding a fixed direction after one block."""
    cfg = make_config("steer", {"mode": "add"})
    return get_operator("steer").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                       cfg).subject




def test_oracle_reads_at_its_own_floor(toy_original, toy_oracle, toy_facts):
    f = directional_ablation(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)
    assert f.reading != "suppression-signature", f.reason
    assert abs(f.scores["recovery"] - f.scores["floor_recovery"]) <= TH.floor_margin
    assert f.scores["recovery"] < TH.recovered


def test_identity_still_answers(toy_original, toy_oracle, toy_facts):
    f = directional_ablation(toy_original, identity_edit(toy_original), toy_facts, toy_oracle)
    assert f.reading == "inconclusive" and "still answers" in f.reason


def test_steering_hook_is_undone(toy_original, toy_oracle, toy_facts, steered):
    """Steering adds a fixed vector after its block: the M1-minus-M0 mean at that block is that
    vector, so projecting it out removes the push (and nothing differs before it)."""
    f = directional_ablation(toy_original, steered, toy_facts, oracle=toy_oracle)
    assert f.reading == "suppression-signature", f.reason
    assert f.scores["recovery"] - max(f.scores["floor_recovery"], 0.0) >= TH.recovered
    first = min(steered.interventions[-1].layers)
    assert np.all(f.arrays["shift_M1"][:first] == 0)  # the hook acts from its block on
    assert f.arrays["shift_M1"][first] > 1.0  # a push of the order of the residual itself
    assert not f.arrays["accepted_M1"][:first].any()


def test_output_only_hook_has_no_direction(toy_original, toy_oracle, toy_facts):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    f = directional_ablation(toy_original, m1, toy_facts, oracle=toy_oracle)
    assert f.reading == "inconclusive"
    assert "no direction separates M1 from M0" in f.reason
    assert np.all(f.arrays["shift_M1"] == 0) and not f.arrays["accepted_M1"].any()


def test_inputs_untouched_and_deterministic(toy_original, toy_oracle, toy_facts, steered):
    assert_pure_and_deterministic(directional_ablation, (toy_original, steered, toy_oracle), toy_original, steered,
                                  toy_facts, oracle=toy_oracle, seed=3)


def test_split_holds_out_whole_entities(toy_facts):
    fit, ev = split_by_entity(toy_facts.forget, seed=0)
    assert len(fit) + len(ev) == len(toy_facts.forget) and len(fit) and len(ev)
    assert not {f.entity for f in fit} & {f.entity for f in ev}
    assert [f.id for f in split_by_entity(toy_facts.forget, seed=0)[0]] == [f.id for f in fit]


def test_a_null_direction_changes_nothing_and_keeps_m1_hooks(toy_original, toy_facts, steered):
    """The ablation runs on a fork that keeps M1's own hooks: ablating nothing leaves M0 and the
    steered M1 answering as they do."""
    fs = toy_facts.forget.take(16)
    p, a = [f.prompt for f in fs], [f.answer for f in fs]
    d = np.zeros(toy_original.d_model, dtype=np.float32)
    for s in (toy_original, steered):
        plain = ablated_exact(s, {}, p, a)
        np.testing.assert_array_equal(ablated_exact(s, {0: d, 2: d}, p, a), plain)
    assert ablated_exact(toy_original, {}, p, a).mean() - ablated_exact(steered, {}, p, a).mean() \
        >= 0.5


def test_deep_models_sweep_a_grid_plus_where_the_edit_acts():
    assert pick_layers(4, [np.ones(4)]) == [0, 1, 2, 3]
    rel = np.r_[np.zeros(7), np.full(23, 5.0)]  # M1 departs from M0 at block 7
    got = pick_layers(30, [rel, np.linspace(0.1, 0.5, 30)])
    assert 7 in got and {0, 29} <= set(got) and len(got) <= 12 + 2 * 3
