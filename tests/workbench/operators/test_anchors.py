"""Counterfactual anchor prompts (`workbench.operators.anchors`) on the built-in fact set."""

from __future__ import annotations

from workbench.facts import builtin_facts, phrasings
from workbench.operators.anchors import neighbour_words, swap_anchors


def test_swaps_keep_relations_and_entities_apart():
    facts = builtin_facts("smollm2")
    anchors = swap_anchors(facts.forget, facts.retain, per_prompt=2, seed=0)
    assert anchors == swap_anchors(facts.forget, facts.retain, per_prompt=2, seed=0)
    known = {p for _, p in phrasings([*facts.forget, *facts.retain])}
    assert anchors and not known & set(anchors)
    capitals = {f.entity for f in facts.retain if f.relation == "capital"}
    # entity swaps: a forget capital prompt about a retain country whose capital is kept
    assert any("capital" in a and any(c in a for c in capitals) for a in anchors)
    # relation swaps: Russia's other facts are held, but never the capital it must forget
    russia = [a for a in anchors if "Russia" in a]
    assert russia and not any("capital" in a for a in russia)
    # relations never cross types: no element or antonym prompt about a country
    symbol_templates = {p.split(" gold")[0] for f, p in phrasings(facts.forget)
                        if f.entity == "gold"}
    countries = {f.entity for f in facts.forget if f.relation in ("capital", "language")}
    assert not any(t in a and c in a for a in anchors for t in symbol_templates
                   for c in countries)


def test_no_entities_no_anchors():
    facts = builtin_facts("smollm2")
    bare = facts.__class__(tuple(f.__class__(f.id, f.prompt, f.answer, f.split)
                                 for f in facts.forget))
    assert swap_anchors(bare, facts.retain) == []


def test_neighbours_are_similar_words_but_not_the_entity_itself(bundled):
    emb = bundled.model.get_input_embeddings().weight.detach()
    near = neighbour_words(bundled.tokenizer, emb, ["France", "copper"], 6, {"France", "copper"})
    assert len(near["France"]) == len(near["copper"]) == 6
    assert {"Germany", "Belgium"} & set(near["France"])  # other countries
    assert not any(w.casefold().startswith("fran") for w in near["France"])  # no French, France
    assert {"bronze", "zinc"} & set(near["copper"])
    facts = builtin_facts("smollm2")
    anchors = swap_anchors(facts.forget, facts.retain, per_prompt=2, neighbours=near)
    assert any(w in a for a in anchors for w in near["copper"])
