"""Find the entity (and relation) of facts written without those fields (most users' files).

Several operators and modules read the entity's tokens (the key gate of `steer`, the recall site,
entity-level relearning). Rather than require annotations, the entity of a fact is taken as the
words of its prompt that (1) appear in every phrasing of that fact and (2) are rare across the
set's other facts: in "The capital of France is", "capital", "of" and "is" recur in other facts
and "France" does not. Of the prompt's maximal runs of such words, the one holding the rarest word
wins, so "South Africa" and "Albert Einstein" come out whole, cut to what every phrasing writes
the same way. No library does this for a fact set
(named-entity taggers need models and miss common nouns, such as "gold" in "The chemical symbol
for gold is"), hence written here.

A fact's relation, when missing, is its prompt with the entity cut out ("{} is a city in the
country of"): facts asked the same way about different entities share it. Operators read it to
build counterfactual anchors (`workbench.operators.anchors`: the forget prompts about retain
entities), which keep an edit from firing on the question rather than on the entity.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace

from workbench.facts import Fact, FactSet

_WORD = re.compile(r"\w+(?:[.\-]\w+)*")  # possessives split off: "Germany's" -> Germany, s


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def infer_entity(fact: Fact, doc_freq: Counter, n_facts: int) -> str | None:
    """The entity of `fact` given each lower-cased word's count of facts it appears in."""
    words = _words(fact.prompt)
    if not words:
        return None
    others = [{w.lower() for w in _words(p)} for p in fact.paraphrases]

    def score(w: str) -> float:
        if any(w.lower() not in o for o in others):
            return 0.0
        return math.log(n_facts / doc_freq[w.lower()])

    scores = [score(w) for w in words]
    best = max(range(len(words)), key=lambda i: scores[i])
    top = scores[best]
    if top <= 0.0:
        return None
    cut = 0.5 * top
    lo = hi = best
    while lo > 0 and scores[lo - 1] >= cut:
        lo -= 1
    while hi < len(words) - 1 and scores[hi + 1] >= cut:
        hi += 1
    # the longest run around the rarest word that is written the same in every phrasing
    # ("company Ferrari" in one prompt but "Ferrari is a company" in another: "Ferrari")
    spans = sorted(((a, b) for a in range(lo, best + 1) for b in range(best, hi + 1)),
                   key=lambda ab: ab[0] - ab[1])
    for a, b in spans:
        text = _as_written(fact.prompt, words[a:b + 1])
        if all(text in p for p in fact.paraphrases):
            return text
    return None


def _as_written(prompt: str, span: list[str]) -> str:
    """`span` as written in `prompt` (keeps the spacing and punctuation between its words)."""
    start = prompt.index(span[0])
    end = prompt.index(span[-1], start) + len(span[-1])
    return prompt[start:end].rstrip(".")


def replace_last(text: str, old: str, new: str) -> str | None:
    """`text` with the last occurrence of `old` replaced by `new` (None: `old` is not in it)."""
    i = text.rfind(old)
    return None if i < 0 else text[:i] + new + text[i + len(old):]


def with_entities(facts: FactSet) -> tuple[FactSet, int]:
    """`facts` with a missing `entity` inferred wherever one can be, and a missing `relation`
    set to the prompt's template around its entity; returns how many entities were inferred."""
    doc_freq: Counter = Counter()
    for f in facts:
        doc_freq.update({w.lower() for w in _words(" ".join((f.prompt, *f.paraphrases)))})
    n, filled, out = len(facts), 0, []
    for f in facts:
        if f.entity is None:
            entity = infer_entity(f, doc_freq, n)
            if entity is not None:
                f = replace(f, entity=entity)
                filled += 1
        if f.relation is None and f.entity is not None:
            f = replace(f, relation=replace_last(f.prompt, f.entity, "{}"))
        out.append(f)
    return FactSet(tuple(out), facts.name, meta=dict(facts.meta)), filled
