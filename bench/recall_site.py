"""Where does a model recall an entity's facts: at the entity's tokens or at the last prompt token?

    python bench/recall_site.py --model toy
    python bench/recall_site.py --model smollm2

Pairs facts of one relation phrased with the same template about two different entities with
different answers (A, B). For each block L it runs A with the residual stream after L replaced,
at one site, by B's, and counts how often A's prompt then answers B's answer:
`entity` = at the entity's last token, `last` = at the last prompt token. A high `entity` rate at
early blocks means recall happens at the entity's tokens (what the gradient operators'
`positions=entity` default relies on); a high `last` rate from block 0 on means the entity is
copied to the last token early and looked up there.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from workbench.batching import encode, span_mask
from workbench.models import decoder_layers

console = Console(width=120)


def pairs(facts):
    by_key: dict[tuple, list] = {}
    for f in facts:  # the model knows every split but `unseen`
        if f.split != "unseen" and f.entity and f.entity in f.prompt:
            by_key.setdefault((f.relation, f.prompt.replace(f.entity, "@")), []).append(f)
    out = []
    for group in by_key.values():
        for a in group:
            b = next((b for b in group if b.entity != a.entity and b.answer != a.answer), None)
            if b is not None:
                out.append((a, b))
    return out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy", help="toy or smollm2")
    args = ap.parse_args()
    from operators import load_model  # bench/operators.py, next to this script

    subject, facts, _ = load_model(args.model, None)
    tok, model = subject.tokenizer, subject.model
    ps = pairs(facts)
    if not ps:
        raise SystemExit("no fact pairs share a relation and a template")
    A = encode(tok, [a.prompt for a, _ in ps], device=subject.device)
    B = encode(tok, [b.prompt for _, b in ps], device=subject.device)
    width_a, width_b = A.input_ids.shape[1], B.input_ids.shape[1]
    ent_a = span_mask(tok, [a.prompt for a, _ in ps], [a.entity for a, _ in ps], width_a)
    ent_b = span_mask(tok, [b.prompt for _, b in ps], [b.entity for _, b in ps], width_b)
    last_ent = lambda m: m.shape[1] - 1 - m.flip(1).int().argmax(1)  # noqa: E731
    sites = {"entity": (last_ent(ent_a), last_ent(ent_b)), "last": (A.last, B.last)}
    first = lambda ans: tok(ans, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    ans_b = torch.tensor([first(b.answer) for _, b in ps], device=subject.device)
    blocks = decoder_layers(model)
    cache: dict[int, torch.Tensor] = {}
    grab = [blk.register_forward_hook(
        lambda _m, _a, o, i=i: cache.__setitem__(i, (o[0] if isinstance(o, tuple) else o).clone()))
        for i, blk in enumerate(blocks)]
    model(input_ids=B.input_ids, attention_mask=B.attention_mask)
    for h in grab:
        h.remove()
    rows = torch.arange(len(ps), device=subject.device)
    t = Table(title=f"{subject.name}: {len(ps)} pairs; share of A's prompts answering B's answer "
                    f"after patching B's residual in")
    for col in ("block", "at the entity's last token", "at the last prompt token"):
        t.add_column(col, justify="right")
    for L, blk in enumerate(blocks):
        cells = []
        for pa, pb in sites.values():
            def patch(_m, _a, o, L=L, pa=pa, pb=pb):
                x = (o[0] if isinstance(o, tuple) else o).clone()
                x[rows, pa] = cache[L][rows, pb]
                return (x, *o[1:]) if isinstance(o, tuple) else x

            h = blk.register_forward_hook(patch)
            logits = model(input_ids=A.input_ids, attention_mask=A.attention_mask).logits
            h.remove()
            cells.append(f"{(logits[rows, A.last].argmax(-1) == ans_b).float().mean():.0%}")
        t.add_row(str(L), *cells)
    console.print(t)


if __name__ == "__main__":
    main()
