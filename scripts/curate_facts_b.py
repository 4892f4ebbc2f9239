"""Build `bench/data/realfacts_b.jsonl`: a second real-fact set for the bundled model, kept out of
all tuning, written the way most users write theirs (no `entity` or `relation` fields).

Usage: python scripts/curate_facts_b.py scripts/realfacts_b_candidates.json [--out PATH] [--sizes 60,45,40]

The candidates (a JSON list of {prompt, answer, paraphrases}) cover relations the built-in set
does not: landmarks' cities, past tenses, plurals, days, months, colours, paintings, founders,
companies' countries, cities' countries, animal sounds, numbers, tournaments' sports, cities'
languages. A candidate
is kept when the model's greedy continuation of its prompt matches the answer (as `workbench eval`
scores it); each kept fact keeps the paraphrases the model also answers (at least one, else its
first). The kept facts are shuffled with a fixed seed and dealt into forget / retain / holdout.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from workbench.behavior import evaluate
from workbench.facts import Fact, FactSet
from workbench.models import load_subject

OUT = Path(__file__).resolve().parent.parent / "bench" / "data" / "realfacts_b.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--sizes", default="60,45,40")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cands = json.loads(args.candidates.read_text())
    facts = FactSet(tuple(Fact(f"c{i:03d}", c["prompt"], c["answer"], "forget",
                               tuple(c.get("paraphrases", ()))) for i, c in enumerate(cands)), "c")
    subject = load_subject("smollm2-135m", device="cpu")
    ok = {r.id for r in evaluate(subject, facts, batch_size=64) if r.correct}
    kept = [f for f in facts if f.id in ok]
    para_ok = {(r.id, r.prompt) for r in evaluate(subject, FactSet(tuple(kept), "k"),
                                                  batch_size=64, use_paraphrases=True)
               if r.correct}
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"{len(kept)} of {len(facts)} candidates answered; need {sum(sizes)}")
    random.Random(args.seed).shuffle(kept)
    out, start = [], 0
    for split, k in zip(("forget", "retain", "holdout"), sizes, strict=True):
        for j, f in enumerate(kept[start:start + k]):
            paras = [p for p in f.paraphrases if (f.id, p) in para_ok] or list(f.paraphrases[:1])
            out.append(Fact(f"{split[0]}{j:02d}", f.prompt, f.answer, split, tuple(paras)))
        start += k
    FactSet(tuple(out), "realfacts_b").save(args.out)
    print(f"wrote {len(out)} facts to {args.out}")


if __name__ == "__main__":
    main()
