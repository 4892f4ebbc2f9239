"""Counterfactual anchor prompts: forget and retain prompts with their entities swapped.

An operator that trains on the forget prompts against the retain prompts can still learn a shortcut
that also hits facts it was never shown. It can treat the forget *relation* as the trigger ("the
capital of ..." for any country) or the forget *entity* ("Russia" in any prompt), even when the
forget set asks for one fact of one entity. Three kinds of anchor prompt, built from the forget and
retain facts and the model's vocabulary, rule both shortcuts out:

- entity swaps: each forget prompt with its entity replaced by retain entities of the same
  relation ("The capital of Japan is"), so the relation's template alone must not trigger;
- relation swaps: retain prompts of a compatible relation with their entity replaced by a forget
  entity ("The language of Russia is"), so the entity's other facts are kept;
- neighbour swaps: each forget prompt about the vocabulary words whose embeddings are nearest
  the forget entity's ("The chemical symbol for nitrogen is" next to oxygen), so the entities a
  shortcut would most likely hit are held too, though the facts never name them.

Two relations are compatible when a chain of shared entities links them (capital and language via
"France"), so swaps never build nonsense such as "the chemical symbol of Russia". Relation swaps
skip relations that the forget set itself asks about for that entity. Anchors are prompts only:
the operator holds its activations there to the original's, as it does for retain.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from workbench.entities import replace_last
from workbench.facts import Fact, FactSet, phrasings


def _compatible(facts: list[Fact]) -> dict[str, set[str]]:
    """relation -> the relations linked to it through a chain of shared entities (capital and
    currency via capital-language "France" and language-currency "Mexico"), itself included."""
    by_entity: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        if f.entity and f.relation:
            by_entity[f.entity.casefold()].add(f.relation)
    out: dict[str, set[str]] = {}
    for rels in by_entity.values():  # merge the groups each entity's relations touch
        group = set(rels).union(*(out.get(r, set()) for r in rels))
        for r in group:
            out[r] = group
    return defaultdict(set, out)


def swap_anchors(forget: FactSet, retain: FactSet, per_prompt: int = 2, seed: int = 0,
                 paraphrases: bool = True,
                 neighbours: dict[str, list[str]] | None = None) -> list[str]:
    """Up to `per_prompt` entity, relation and neighbour swaps (from `neighbours`: forget entity ->
    words) per forget prompt; facts without `entity` or `relation` take no part. Deterministic
    for a seed; never returns a prompt of the forget or retain sets themselves."""
    rng = random.Random(seed)
    compat = _compatible([*forget, *retain])
    forgotten: dict[str, set[str]] = defaultdict(set)  # forget entity -> relations to forget
    for f in forget:
        if f.entity and f.relation:
            forgotten[f.entity].add(f.relation)
    kept_by_rel: dict[str, list[str]] = defaultdict(list)
    forget_names = {e.casefold() for e in forgotten}
    for g in retain:
        if g.entity and g.relation and g.entity.casefold() not in forget_names \
                and g.entity not in kept_by_rel[g.relation]:
            kept_by_rel[g.relation].append(g.entity)
    swappable = [(g, p) for g, p in phrasings(retain, paraphrases) if g.entity and g.relation]
    out: list[str] = []
    for f, p in phrasings(forget, paraphrases):
        if not (f.entity and f.relation):
            continue
        others = kept_by_rel.get(f.relation, [])
        out += [replace_last(p, f.entity, e) for e in rng.sample(others, min(per_prompt, len(others)))]
        rels = forgotten[f.entity]
        ok = set().union(*(compat[r] for r in rels)) - rels
        rows = [(g, q) for g, q in swappable
                if g.relation in ok and g.entity.casefold() != f.entity.casefold()]
        out += [replace_last(q, g.entity, f.entity) for g, q in rng.sample(rows, min(per_prompt, len(rows)))]
        near = (neighbours or {}).get(f.entity, [])
        out += [replace_last(p, f.entity, w) for w in rng.sample(near, min(per_prompt, len(near)))]
    existing = {p for _, p in phrasings([*forget, *retain], paraphrases)}
    return sorted({p for p in out if p and p not in existing})


def neighbour_words(tokenizer, embedding, entities: list[str], k: int,
                    exclude: set[str]) -> dict[str, list[str]]:
    """For each entity, the `k` vocabulary words whose input embedding is closest (cosine) to
    that of the entity's last token: the entities a shortcut would most likely hit too. Words
    sharing their first four letters with a word of the entity (inflections: "French") and those
    in `exclude` are skipped."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(embedding.shape[0])))
    words = [tokenizer.convert_tokens_to_string([t]) for t in vocab]
    # BPE vocabularies mark word starts with a space; word-level ones have whole words only
    spaced = any(w.startswith(" ") for w in words)
    ok = torch.tensor([(w.startswith(" ") or not spaced) and w.strip().isalpha()
                       and len(w.strip()) >= 3 for w in words])
    e = torch.nn.functional.normalize(embedding.float(), dim=-1)
    out = {}
    banned = {x.casefold() for x in exclude}
    for ent in entities:
        ids = tokenizer(" " + ent, add_special_tokens=False)["input_ids"]
        sim = e @ e[ids[-1]]
        sim[~ok] = -2
        order = torch.argsort(sim, descending=True).tolist()
        picks = []
        stems = {part.casefold()[:4] for part in ent.split()}
        for i in order:
            w = words[i].strip()
            if w.casefold() not in banned and w.casefold()[:4] not in stems and w not in picks:
                picks.append(w)
            if len(picks) == k:
                break
        out[ent] = picks
    return out
