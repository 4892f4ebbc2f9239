"""Where does a model recall an entity's facts: at the entity's tokens or at the last prompt token?

Facts of one relation phrased with the same template about two entities with different answers
(A, B) are paired. For a block L, A's prompt is run with the residual stream after L replaced, at
one site, by B's, and the share of A's prompts that then answer B's first answer token is the
site's *swap rate*: `entity` = at the entity's last token, `last` = at the last prompt token.
A high `entity` rate means that after block L the entity's facts still live at its own tokens
(SmolLM2 in its early blocks, where patching the last token swaps almost nothing); a high `last`
rate from block 0 on means the entity was copied to the last token early and is looked up there
(the toy model). `rmu` picks its misdirection positions from this (`positions=auto`);
`bench/recall_site.py` prints the rates of every block and writes them to
`bench/results/recall_site.json`.

Written here rather than with TransformerLens: it runs on the HF model the operators edit, with
one forward hook per block, and needs nothing but the two patched positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from workbench.batching import chunks, encode, last_true, span_mask
from workbench.facts import Fact
from workbench.models import Subject, decoder_layers, hidden_of, with_hidden

SITES = ("entity", "last")


def swap_pairs(facts: Iterable[Fact]) -> list[tuple[Fact, Fact]]:
    """(A, B) pairs: same relation and canonical template, different entities and answers."""
    by_key: dict[tuple, list[Fact]] = {}
    for f in facts:
        if f.entity and f.entity in f.prompt:
            by_key.setdefault((f.relation, f.prompt.replace(f.entity, "@")), []).append(f)
    out = []
    for group in by_key.values():
        for a in group:
            b = next((b for b in group if b.entity != a.entity and b.answer != a.answer), None)
            if b is not None:
                out.append((a, b))
    return out


@torch.no_grad()
def swap_rates(subject: Subject, pairs: Sequence[tuple[Fact, Fact]],
               blocks: Sequence[int] | None = None, batch_size: int = 64,
               ) -> dict[int, dict[str, float]]:
    """{block: {"entity": rate, "last": rate}} for the given blocks (default: all)."""
    if not pairs:
        return {}
    n_layers = len(decoder_layers(subject.model))
    blocks = list(range(n_layers)) if blocks is None else list(blocks)
    hits = {L: dict.fromkeys(SITES, 0) for L in blocks}
    for sl in chunks(len(pairs), batch_size):
        for L, site_hits in _swap_hits(subject, pairs[sl], blocks).items():
            for site, h in site_hits.items():
                hits[L][site] += h
    return {L: {site: h / len(pairs) for site, h in sites.items()} for L, sites in hits.items()}


def _swap_hits(subject: Subject, pairs: Sequence[tuple[Fact, Fact]], blocks: Sequence[int],
               ) -> dict[int, dict[str, int]]:
    tok, model, dev = subject.tokenizer, subject.model, subject.device
    layers = decoder_layers(model)
    pa, pb = [a.prompt for a, _ in pairs], [b.prompt for _, b in pairs]
    A, B = encode(tok, pa, device=dev), encode(tok, pb, device=dev)

    def last_entity_token(prompts, facts, width):
        return last_true(span_mask(tok, prompts, [f.entity for f in facts], width)).to(dev)

    sites = {"entity": (last_entity_token(pa, [a for a, _ in pairs], A.input_ids.shape[1]),
                        last_entity_token(pb, [b for _, b in pairs], B.input_ids.shape[1])),
             "last": (A.last.to(dev), B.last.to(dev))}
    answer_b = torch.tensor([tok(b.answer, add_special_tokens=False)["input_ids"][0]
                             for _, b in pairs], device=dev)
    cache: dict[int, torch.Tensor] = {}
    grab = [layers[L].register_forward_hook(
        lambda _m, _a, o, L=L: cache.__setitem__(L, hidden_of(o).clone())) for L in blocks]
    try:
        model(input_ids=B.input_ids, attention_mask=B.attention_mask)
    finally:
        for h in grab:
            h.remove()
    rows = torch.arange(len(pairs), device=dev)
    hits: dict[int, dict[str, int]] = {}
    for L in blocks:
        hits[L] = {}
        for site, (at_a, at_b) in sites.items():
            def patch(_m, _a, o, L=L, at_a=at_a, at_b=at_b):
                x = hidden_of(o).clone()
                x[rows, at_a] = cache[L][rows, at_b]
                return with_hidden(o, x)

            h = layers[L].register_forward_hook(patch)
            try:
                logits = model(input_ids=A.input_ids, attention_mask=A.attention_mask).logits
            finally:
                h.remove()
            hits[L][site] = int((logits[rows, A.last.to(dev)].argmax(-1) == answer_b).sum())
    return hits
