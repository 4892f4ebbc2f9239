"""One operator on an entity-level split of SmolLM2's built-in facts: every fact about a few
entities is forgotten, the other entities' retain and holdout facts stay (as in TOFU).

    python bench/entity_level.py ga                 # defaults
    python bench/entity_level.py ga rows=entity     # force the entity rows on (tied embedding)

The built-in split is fact-level (France's capital is forgotten, its language kept), so it never
exercises what only entity-level sets switch on, such as the forget entities' embedding rows.
Writes the figures to `bench/results/entity_level.json`, one entry per operator and overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from rich.console import Console

from workbench.behavior import accuracy_by_split
from workbench.facts import FactSet, builtin_facts
from workbench.models import load_subject
from workbench.operators import get_operator, make_config

FORGOTTEN = ("France", "Spain", "Russia", "Italy", "China", "Poland")


def entity_level(facts: FactSet, forgotten: tuple[str, ...]) -> FactSet:
    """Every fact about `forgotten` becomes forget; the rest of the forget split is dropped."""
    out = []
    for f in facts:
        if f.entity in forgotten:
            out.append(dataclasses.replace(f, split="forget"))
        elif f.split != "forget":
            out.append(f)
    return FactSet(tuple(out), name=f"{facts.name}-entity-level")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("operator")
    ap.add_argument("overrides", nargs="*", help="config key=value")
    args = ap.parse_args()
    subject = load_subject("smollm2-135m", device="cpu")
    facts = entity_level(builtin_facts("smollm2"), FORGOTTEN)
    before = accuracy_by_split(subject, facts)
    t0 = time.perf_counter()
    edit = get_operator(args.operator).apply(subject, facts.forget, facts.retain,
                                             make_config(args.operator, args.overrides))
    seconds = time.perf_counter() - t0
    after = accuracy_by_split(edit.subject, facts)
    training = edit.metrics.get("training", {})
    con = Console()
    con.print(
        f"{args.operator} {' '.join(args.overrides)}: {seconds:.0f} s, "
        f"steps {training.get('steps', '-')}, entity rows {training.get('entity_rows', '-')}; "
        + ", ".join(f"{s} ({before[s]['n']}) {before[s]['accuracy']:.0%} -> "
                    f"{after[s]['accuracy']:.0%}" for s in before))
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("entity_level", vars(args), {
        "subject": subject.name, "facts": facts.name, "forgotten": list(FORGOTTEN),
        "seconds": round(seconds, 1), "training": training or None,
        "before": before, "after": after})
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
