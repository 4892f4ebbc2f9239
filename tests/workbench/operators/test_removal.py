"""Removal-intended operators (ga, graddiff, npo, task_vector) on the toy world, plus errors."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_forgets_like_the_oracle, snapshot

from workbench.behavior import accuracy_by_split
from workbench.errors import LayerError, WorkbenchError
from workbench.facts import FactSet
from workbench.operators import get_operator, make_config

REMOVAL = ("ga", "graddiff", "npo")
MOVES = {"lr": 1e-3, "layers": (0, 1, 2, 3), "positions": "all", "preserve": 0.0}



def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.fixture(scope="module")
def toy_before(toy_original, toy_facts):
    return accuracy_by_split(toy_original, toy_facts)


@pytest.mark.parametrize("name", ("graddiff", "npo"))
def test_short_run_lowers_forget_and_keeps_retain(name, toy_original, toy_facts, toy_before):
    # the pre-locality recipe (every block, all positions, no projection, lr 1e-3): it moves the
    # toy model, whose lookup is not at the entity's token (see tests/workbench/operators/test_training.py)
    edit = get_operator(name).apply(toy_original, toy_facts.forget, toy_facts.retain,
                                    make_config(name, {"steps": 20, "eval_every": 10, **MOVES}))
    after = accuracy_by_split(edit.subject, toy_facts, generate=False)
    # forget answers move down, and by more than twice as much as retain ones, on every world
    # seed (how far: bench/operators.py --models toy --operators graddiff,npo --teacher-forced
    # --set steps=20 eval_every=10 lr=1e-3 layers=0,1,2,3 positions=all preserve=0, written to
    # bench/results/operators.json); how saturated a world's answers are sets the absolute drop
    drop = {s: toy_before[s]["logprob"] - after[s]["logprob"] for s in ("forget", "retain")}
    assert drop["forget"] > 0.05, drop
    assert drop["forget"] > 2 * max(drop["retain"], 0.0), drop
    assert after["retain"]["accuracy"] >= 0.85
    assert [e["step"] for e in edit.metrics["training"]["evals"]] == [10, 20]


# The toy model recalls a person's facts at the last prompt token with blocks every person shares
# (bench/recall_site.py), so what forgets them is the forget names' own embedding rows (`rows=auto`).
@pytest.mark.parametrize("name", ("ga", "task_vector", "graddiff", "npo"))
def test_operator_forgets_like_the_oracle_on_toy_world(name, toyworld, toy_original, toy_facts,
                                                       toy_before):
    edit = get_operator(name).apply(toy_original, toy_facts.forget, toy_facts.retain,
                                    make_config(name))
    assert edit.family == "removal-intended" and edit.kind == "weights"
    assert edit.chain[-1]["operator"] == name
    assert edit.metrics["training"]["steps"] >= 1
    assert_forgets_like_the_oracle(toyworld, toy_before, accuracy_by_split(edit.subject, toy_facts))


def test_task_vector_pushes_forget_answers_down(toy_original, toy_facts, toy_before):
    """Task-vector negation lowers the forget answers' log-prob more than the holdout's."""
    edit = get_operator("task_vector").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                             make_config("task_vector"))
    after = accuracy_by_split(edit.subject, toy_facts, generate=False)
    drop_f = toy_before["forget"]["logprob"] - after["forget"]["logprob"]
    drop_h = toy_before["holdout"]["logprob"] - after["holdout"]["logprob"]
    assert drop_f > 0 and drop_f > drop_h


def test_task_vector_uses_the_smallest_scale_that_forgets(toy_original, toy_facts):
    cfg = {"steps": 20, "alpha_grid": (0.0, 0.5, 1.0)}
    edit = get_operator("task_vector").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                             make_config("task_vector", cfg))
    log = edit.metrics["training"]
    tried = log["scales_tried"]
    assert tried[0] == {"alpha": 0.0, "forget": pytest.approx(1.0, abs=0.05)}  # the original
    assert [t["alpha"] for t in tried] == [5.0 * f for f in (0.0, 0.5, 1.0)][: len(tried)]
    assert all(t["forget"] > 0.05 for t in tried[:-1])  # it stopped at the first that forgot
    assert log["scale"] == tried[-1]["alpha"] or log["scale"] == 5.0
    fixed = get_operator("task_vector").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                              make_config("task_vector",
                                                          cfg | {"stop_forget_acc": None}))
    assert fixed.metrics["training"]["scale"] == 5.0 and not fixed.metrics["training"]["scales_tried"]


def test_input_subject_is_never_modified(toy_original, toy_facts):
    before = snapshot(toy_original)
    for name in ("ga", "task_vector"):
        edit = get_operator(name).apply(toy_original, toy_facts.forget, toy_facts.retain,
                                        make_config(name, {"steps": 3, "eval_every": 0}))
        assert changed(before, snapshot(edit.subject))  # the edit did change its own copy
    assert not changed(before, snapshot(toy_original))
    assert "chain" not in toy_original.meta


def test_same_seed_gives_bitwise_identical_weights(toy_original, toy_facts):
    cfg = {"steps": 4, "eval_every": 0, "batch_size": 8}
    a = get_operator("npo").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                  make_config("npo", cfg, seed=3))
    b = get_operator("npo").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                  make_config("npo", cfg, seed=3))
    c = get_operator("npo").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                  make_config("npo", cfg, seed=4))
    assert not changed(snapshot(a.subject), snapshot(b.subject))
    assert changed(snapshot(a.subject), snapshot(c.subject))  # the seed picks the batches


def test_only_the_chosen_layers_and_group_train(toy_original, toy_facts):
    edit = get_operator("graddiff").apply(
        toy_original, toy_facts.forget, toy_facts.retain,
        make_config("graddiff", ["layers=1", "params=mlp", "steps=2", "eval_every=0",
                                  "rows=none"]))
    diff = changed(snapshot(toy_original), snapshot(edit.subject))
    assert diff and all(k.startswith("model.layers.1.mlp.") for k in diff), diff


def test_npo_with_lora_and_kl_retain_merges_into_plain_weights(toy_original, toy_facts):
    cfg = make_config("npo", ["lora_rank=4", "retain_loss=kl", "steps=3", "eval_every=0",
                              "lr=1e-2", "layers=0,2"])
    edit = get_operator("npo").apply(toy_original, toy_facts.forget, toy_facts.retain, cfg)
    assert type(edit.subject.model) is type(toy_original.model)  # merged, not a PeftModel
    diff = changed(snapshot(toy_original), snapshot(edit.subject))
    assert "model.embed_tokens.weight" in diff  # the forget names' rows train next to LoRA
    assert all(k.startswith(("model.layers.0.mlp.", "model.layers.2.mlp."))
               and k.endswith("proj.weight") for k in diff - {"model.embed_tokens.weight"}), diff


def test_npo_reference_is_precomputed_once(toy_original, toy_facts, monkeypatch):
    """The frozen reference costs one pass over the forget set, not one forward per step."""
    import workbench.operators.gradient as gradient

    calls = []
    real = gradient.reference_sequence_logprob
    monkeypatch.setattr(gradient, "reference_sequence_logprob",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    get_operator("npo").apply(toy_original, toy_facts.forget, toy_facts.retain,
                              make_config("npo", {"steps": 3, "eval_every": 0}))
    assert calls == [1]


# ----- errors ----------------------------------------------------------------------------------

def test_unknown_operator_and_config_errors():
    with pytest.raises(WorkbenchError, match="unknown operator 'nope'"):
        get_operator("nope")
    with pytest.raises(WorkbenchError, match="no config key"):
        make_config("ga", ["learning_rate=1"])
    with pytest.raises(WorkbenchError, match="cannot read 'fast' as float"):
        make_config("npo", ["beta=fast"])
    with pytest.raises(WorkbenchError, match="key=value"):
        make_config("ga", ["steps"])


def test_empty_forget_set_is_refused(toy_original, toy_facts):
    empty = FactSet((), "empty")
    for name in ("ga", "graddiff", "npo", "task_vector"):
        with pytest.raises(WorkbenchError, match="forget set is empty"):
            get_operator(name).apply(toy_original, empty, toy_facts.retain, make_config(name))


def test_bad_training_settings_are_refused(toy_original, toy_facts):
    f, r = toy_facts.forget, toy_facts.retain
    with pytest.raises(LayerError, match="out of range"):
        get_operator("ga").apply(toy_original, f, r, make_config("ga", ["layers=0,99"]))
    with pytest.raises(WorkbenchError, match="params must be one of"):
        get_operator("ga").apply(toy_original, f, r, make_config("ga", ["params=embed"]))
    with pytest.raises(WorkbenchError, match="retain_loss must be one of"):
        get_operator("npo").apply(toy_original, f, r, make_config("npo", ["retain_loss=l2"]))
    with pytest.raises(WorkbenchError, match="retain set is empty"):
        get_operator("graddiff").apply(toy_original, f, FactSet((), "none"), make_config("graddiff"))


# ----- the bundled model's built-in facts (real fine-tuning; quality bars: bench/operators.py) --

@pytest.mark.slow
def test_npo_on_the_bundled_model_lowers_forget_answers_more_than_holdout(bundled):
    """A short npo run on SmolLM2's built-in facts moves the forget answers' log-prob down by more
    than the holdout answers' (the quality bar itself is bench/operators.py's business)."""
    from workbench.facts import builtin_facts

    facts = builtin_facts("smollm2")
    before = accuracy_by_split(bundled, facts, generate=False)
    edit = get_operator("npo").apply(bundled, facts.forget, facts.retain,
                                     make_config("npo", {"steps": 12, "eval_every": 0}))
    after = accuracy_by_split(edit.subject, facts, generate=False)
    drop = {s: before[s]["logprob"] - after[s]["logprob"] for s in ("forget", "holdout")}
    assert drop["forget"] > 0.5 and drop["forget"] > 2 * max(drop["holdout"], 0.0), drop
