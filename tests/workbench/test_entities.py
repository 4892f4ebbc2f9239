"""Entities of facts written without `entity` fields are found from the prompts themselves."""

from __future__ import annotations

from dataclasses import replace

from workbench.entities import with_entities
from workbench.facts import Fact, FactSet, builtin_facts


def _bare(fs: FactSet) -> FactSet:
    return FactSet(tuple(replace(f, entity=None) for f in fs), fs.name)


def test_inferred_entities_match_the_annotations_of_the_builtin_set():
    fs = builtin_facts()
    got, n = with_entities(_bare(fs))
    assert n == len(fs)
    same = [b.entity is not None and (b.entity in a.entity or a.entity in b.entity)
            for a, b in zip(fs, got, strict=True)]
    assert sum(same) >= 0.9 * len(fs), [(a.prompt, b.entity) for a, b in zip(fs, got) if not
                                        (b.entity and (b.entity in a.entity or a.entity in b.entity))]
    for f in got:
        assert f.entity in f.prompt  # a span of the prompt, as written


def test_annotations_are_kept_and_multiword_names_come_out_whole():
    facts = FactSet((
        Fact("a", "Albert Einstein was born in", " Germany", "forget",
             ("Albert Einstein's birthplace is",)),
        Fact("b", "Marie Curie was born in", " Poland", "retain", ("Marie Curie's birthplace is",)),
        Fact("c", "South Africa is a country in", " Africa", "retain",
             ("South Africa lies in",)),
        Fact("d", "The capital of Peru is", " Lima", "retain", (), entity="Peru"),
    ), "t")
    got, n = with_entities(facts)
    assert [f.entity for f in got] == ["Albert Einstein", "Marie Curie", "South Africa", "Peru"]
    assert n == 3


def test_every_phrasing_of_an_unannotated_file_holds_its_entity():
    """The second real-fact set has no entity fields and phrasings that reorder the words
    ("The company Ferrari has ..." / "Ferrari is a company from")."""
    from pathlib import Path

    from workbench.facts import phrasings, unnamed

    path = Path(__file__).resolve().parents[2] / "bench" / "data" / "realfacts_b.jsonl"
    fs = FactSet.load(path)
    assert all(f.entity is None for f in fs)
    got, n = with_entities(fs)
    assert n == len(fs) and not unnamed(phrasings(got, True))


def test_missing_relations_are_the_prompt_templates_around_the_entity():
    facts = FactSet((
        Fact("a", "Lille is a city in the country of", " France", "forget", ()),
        Fact("b", "Porto is a city in the country of", " Portugal", "retain", ()),
        Fact("c", "The plural of mouse is", " mice", "retain", ("More than one mouse are",)),
        Fact("d", "The capital of Peru is", " Lima", "retain", (), entity="Peru",
             relation="capital"),
    ), "t")
    got, _ = with_entities(facts)
    assert got[0].relation == got[1].relation == "{} is a city in the country of"
    assert got[2].relation == "The plural of {} is"
    assert got[3].relation == "capital"  # annotations are kept
