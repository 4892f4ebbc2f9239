"""Where does a model recall an entity's facts: at the entity's tokens or at the last prompt token?

    python bench/recall_site.py --model toy
    python bench/recall_site.py --model smollm2

Prints `workbench.recall_site.swap_rates` for every block: the share of A's prompts that answer
B's answer after B's residual is patched in at the entity's last token or at the last prompt
token. A high `entity` rate at early blocks means recall happens at the entity's tokens (what the
gradient operators' `positions=entity` default relies on); a high `last` rate from block 0 on
means the entity is copied to the last token early and looked up there. Writes the rates to
`bench/results/recall_site.json`, one entry per `--model`.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from workbench.recall_site import swap_pairs, swap_rates

console = Console(width=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy", help="toy or smollm2")
    args = ap.parse_args()
    from operators import load_model  # bench/operators.py, next to this script

    subject, facts, _ = load_model(args.model, None)
    ps = swap_pairs(f for f in facts if f.split != "unseen")  # the model knows the other splits
    if not ps:
        raise SystemExit("no fact pairs share a relation and a template")
    t = Table(title=f"{subject.name}: {len(ps)} pairs; share of A's prompts answering B's answer "
                    f"after patching B's residual in")
    for col in ("block", "at the entity's last token", "at the last prompt token"):
        t.add_column(col, justify="right")
    rates = swap_rates(subject, ps)
    for L, r in rates.items():
        t.add_row(str(L), f"{r['entity']:.0%}", f"{r['last']:.0%}")
    console.print(t)
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("recall_site", vars(args), {
        "subject": subject.name, "facts": facts.name, "pairs": len(ps),
        "swap_rates": {str(L): {"entity": r["entity"], "last": r["last"]}
                       for L, r in rates.items()}})
    console.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
