"""The forget entities' own embedding rows (`workbench.operators.entity_rows`): when they train,
which rows move, how shared tokens are damped, and that the tied unembedding stays exact."""

from __future__ import annotations

import pytest
import torch

from workbench.batching import encode
from workbench.errors import WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.operators import get_operator, make_config
from workbench.operators.entity_rows import EntityRows, entity_token_ids, rows_wanted


def _facts(*rows: tuple[str, str, str, str]) -> FactSet:
    return FactSet(tuple(Fact(f"f{i}", p, a, s, entity=e, relation="r")
                         for i, (p, a, s, e) in enumerate(rows)))


def test_rows_train_only_for_entity_level_forget_sets(toy_facts, toy_original, tiny):
    assert rows_wanted(toy_facts.forget, toy_facts.retain, "auto", entity_focus=True)
    assert rows_wanted(toy_facts.forget, toy_facts.retain, "auto", True, toy_original.model)
    # a tied row is also its token's output vector: not the entity's own, so auto leaves it
    assert not rows_wanted(toy_facts.forget, toy_facts.retain, "auto", True, tiny.model)
    assert rows_wanted(toy_facts.forget, toy_facts.retain, "entity", True, tiny.model)
    shared = _facts(("Bob lives in", " Oslo", "forget", "Bob"),
                    ("Bob works as a", " baker", "retain", "Bob"))
    assert not rows_wanted(shared.forget, shared.retain, "auto", entity_focus=True)
    assert rows_wanted(shared.forget, shared.retain, "entity", entity_focus=True)
    assert not rows_wanted(toy_facts.forget, toy_facts.retain, "auto", entity_focus=False)
    assert not rows_wanted(toy_facts.forget, toy_facts.retain, "none", entity_focus=True)
    with pytest.raises(WorkbenchError, match="rows=entity"):
        rows_wanted(toy_facts.forget, toy_facts.retain, "entity", entity_focus=False)
    with pytest.raises(WorkbenchError, match="rows must be one of"):
        rows_wanted(toy_facts.forget, toy_facts.retain, "some", entity_focus=True)


def test_gradient_edit_moves_exactly_the_forget_names_rows(toy_original, toy_facts):
    edit = get_operator("ga").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                    make_config("ga", ["layers=1", "steps=3", "eval_every=0"]))
    w0 = toy_original.model.get_input_embeddings().weight
    w1 = edit.subject.model.get_input_embeddings().weight
    moved = set(torch.nonzero((w0 != w1).any(1)).flatten().tolist())
    names = set(entity_token_ids(toy_original.tokenizer, toy_facts.forget).tolist())
    assert moved == names and len(names) == 30  # one word-level token per forget person
    assert edit.metrics["training"]["entity_rows"] == 30
    head0, head1 = (m.model.get_output_embeddings().weight for m in (toy_original, edit.subject))
    assert torch.equal(head0, head1)  # the toy model's unembedding is untied and stays frozen


def test_rows_off_keeps_the_embedding_frozen(toy_original, toy_facts):
    edit = get_operator("npo").apply(
        toy_original, toy_facts.forget, toy_facts.retain,
        make_config("npo", ["layers=1", "steps=2", "eval_every=0", "rows=none"]))
    assert torch.equal(toy_original.model.get_input_embeddings().weight,
                       edit.subject.model.get_input_embeddings().weight)
    assert edit.metrics["training"]["entity_rows"] == 0


def test_rows_that_retain_or_prose_use_are_damped(tiny):
    forget = _facts(("Zorblat Quennix lives in", " Oslo", "forget", "Zorblat Quennix"),
                    ("The capital of France is", " Paris", "forget", "France"))
    sources = [encode(tiny.tokenizer, ["We flew to France and Spain."] * 20)]
    rows = EntityRows.for_facts(tiny.model, tiny.tokenizer, forget, sources, preserve=0.1)
    france = tiny.tokenizer(" France", add_special_tokens=False)["input_ids"]
    scale = dict(zip(rows.ids.tolist(), rows.scale.tolist(), strict=True))
    assert len(france) == 1 and scale[france[0]] < 1e-3  # a token the sources use: ~frozen
    free = [s for i, s in scale.items() if i != france[0]]
    assert free and all(s == 1.0 for s in free)  # tokens the sources never use: fully free
    before = rows.delta.detach().clone()
    with torch.no_grad():
        rows.delta.add_(1.0)
    rows.constrain(before)
    assert torch.allclose(rows.delta.detach().sum(1), rows.scale * rows.delta.shape[1])


def test_tied_unembedding_during_training_matches_the_merged_model(tiny):
    """With tied weights the delta also reaches those tokens' logits, so what trains is exactly
    the checkpoint that `merge` writes."""
    forget = _facts(("The capital of France is", " Paris", "forget", "France"))
    model = tiny.clone().model
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    rows = EntityRows.for_facts(model, tiny.tokenizer, forget, [], preserve=0.0)
    with torch.no_grad():
        rows.delta.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    b = encode(tiny.tokenizer, ["The capital of France is", "France, France and Spain"])
    handles = rows.attach(model, lambda: None)
    with torch.no_grad():
        hooked = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    for h in handles:
        h.remove()
    rows.merge(model)
    with torch.no_grad():
        merged = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        plain = tiny.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    assert torch.allclose(hooked, merged, atol=1e-5)
    assert not torch.allclose(plain, merged, atol=1e-3)


def test_prune_zeroes_the_forget_names_rows_only(toy_original, toy_facts):
    edit = get_operator("prune").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                       make_config("prune"))
    w0 = toy_original.model.get_input_embeddings().weight
    w = edit.subject.model.get_input_embeddings().weight
    moved = torch.nonzero((w != w0).any(1)).flatten()
    names = set(entity_token_ids(toy_original.tokenizer, toy_facts.forget).tolist())
    assert set(moved.tolist()) == names and (w[moved] == 0).all()
    assert edit.metrics["pruned"]["embed"] == 30
