"""How densely does a model code who an entity is? Per block, at each prompt's entity token:

- the share of the residual variance that the entity's identity explains (between-entity
  variance over total), and
- how many principal components hold 50 / 90 / 99% of that variance.

    python bench/entity_code.py --model toy
    python bench/entity_code.py --model smollm2

A code where a hundred entities share a dozen directions leaves a sparse autoencoder no reason to
give each entity a feature of its own, which is what `sae_clamp` needs to single out the forget
entities (`saes.features.entity_specificity` counts such features). Writes the table to
`bench/results/entity_code.json`, one entry per `--model`.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from workbench.batching import encode, last_true, span_mask
from workbench.capture import capture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy", help="toy or smollm2")
    args = ap.parse_args()
    from operators import load_model  # bench/operators.py, next to this script

    subject, facts, _ = load_model(args.model, None)
    rows = [f for f in facts if f.split in ("forget", "retain") and f.entity
            and f.entity in f.prompt]
    prompts = [f.prompt for f in rows]
    width = encode(subject.tokenizer, prompts).input_ids.shape[1]
    ent = span_mask(subject.tokenizer, prompts, [f.entity for f in rows], width)
    at = last_true(ent)  # the entity's last token
    # leave out entities at position 0 (no BOS, as in SmolLM2): the first token is an attention
    # sink whose residual is tens of times larger than any other and would be all the variance
    keep = at >= 1
    rows = [f for f, k in zip(rows, keep.tolist(), strict=True) if k]
    prompts, at = [f.prompt for f in rows], at[keep]
    names = sorted({f.entity for f in rows})
    member = torch.tensor([[f.entity == e for e in names] for f in rows], dtype=torch.float64)
    layers = list(range(subject.n_layers))
    acts = capture(subject, prompts, layers, ["resid_post"], position="all")
    t = Table(title=f"{subject.name}: {len(rows)} prompts about {len(names)} entities, residual "
                    f"at the entity's last token")
    for col in ("block", "variance explained by the entity", "PCs for 50%", "90%", "99%"):
        t.add_column(col, justify="right")
    per_block = {}
    for L in layers:
        x = acts.layer(L, "resid_post")[torch.arange(len(rows)), at].double()
        x = x - x.mean(0)
        means = (member.T @ x) / member.sum(0)[:, None]
        between = float(((member @ means) ** 2).sum() / (x**2).sum())
        s2 = torch.linalg.svdvals(x) ** 2
        cum = s2.cumsum(0) / s2.sum()
        pcs = [int((cum < q).sum()) + 1 for q in (0.5, 0.9, 0.99)]
        t.add_row(str(L), f"{between:.0%}", *map(str, pcs))
        per_block[str(L)] = {"entity_variance": between,
                             "pcs": dict(zip(("50%", "90%", "99%"), pcs, strict=True))}
    con = Console(width=120)
    con.print(t)
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("entity_code", vars(args), {
        "subject": subject.name, "facts": facts.name, "prompts": len(rows),
        "entities": len(names), "blocks": per_block})
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
