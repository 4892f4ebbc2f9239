"""The demo's fact subset keeps every split, scaled down by person."""

from __future__ import annotations

from apps.audit_demo import demo_facts


def test_demo_facts_take_whole_people_from_every_split(toy_facts):
    small = demo_facts(toy_facts, people=2)
    for split, n in (("forget", 2), ("retain", 4), ("holdout", 2), ("unseen", 4)):
        people = {f.entity for f in small.split(split)}
        assert len(people) == n
        # whole people: every fact of a kept person is kept
        assert len(small.split(split)) == sum(f.entity in people for f in toy_facts.split(split))
