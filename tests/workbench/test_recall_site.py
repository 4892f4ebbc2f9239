"""workbench.recall_site: which fact pairs are patched, and where the toy model holds a person."""

from __future__ import annotations

from workbench.facts import Fact
from workbench.recall_site import swap_pairs, swap_rates


def _f(entity: str, relation: str, answer: str, template: str = "{} lives in") -> Fact:
    return Fact(id=f"{entity}-{relation}", prompt=template.format(entity), answer=answer,
                split="retain", entity=entity, relation=relation)


def test_swap_pairs_need_same_relation_template_and_different_answers():
    facts = [_f("Ana", "city", " Oslo"), _f("Bo", "city", " Lima"), _f("Cy", "city", " Oslo"),
             _f("Di", "city", " Lima", "The home of {} is"), _f("Ed", "job", " baker")]
    pairs = {(a.entity, b.entity) for a, b in swap_pairs(facts)}
    # Ana and Cy share an answer, Di has another template, Ed another relation
    assert pairs == {("Ana", "Bo"), ("Bo", "Ana"), ("Cy", "Bo")}


def test_toy_model_holds_the_person_at_the_last_token(toy_original, toy_facts):
    pairs = swap_pairs([*toy_facts.forget, *toy_facts.retain])
    assert len(pairs) > 100
    rates = swap_rates(toy_original, pairs, [0, 3], batch_size=50)  # chunked like a big set
    assert set(rates) == {0, 3}
    assert rates[3]["last"] >= 0.95 and rates[3]["entity"] <= 0.05  # the answer is read there
    assert rates[0]["last"] > rates[0]["entity"]  # already copied after the first block
    assert swap_rates(toy_original, [], [0]) == {}
