"""Make an edit of a world's original model with one operator over the world's whole forget split
(its retain split kept), and save it, for `bench/audit.py --edited DIR`: an audit of a real
edit, where every module runs and the edit holds weights of its own, beside the oracle audited as
the edit.

    python bench/make_edit.py --world people --operator npo --out /tmp/people-npo-edit
    python bench/audit.py --worlds people --tiers quick --edited /tmp/people-npo-edit

The edit is made anew each time (`bench/results/audit.json` records the audits, the closing
notes the time it took) and written atomically; an existing `--out` is replaced whole.
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=["toy", "people"], default="people")
    ap.add_argument("--operator", default="npo", help="a registered operator (default: npo)")
    ap.add_argument("--out", required=True, help="directory to save the edit in")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from workbench.operators import get_operator, make_config

    if args.world == "toy":
        from workbench.toyworld import build_toyworld

        world = build_toyworld(progress=True)
    else:
        from workbench.pretrained_world import build_pretrained_world

        world = build_pretrained_world(progress=True)
    m0, facts = world.original(device="cpu"), world.facts()
    t0 = time.perf_counter()
    edit = get_operator(args.operator).apply(m0, facts.forget, facts.retain,
                                             make_config(args.operator, {}, seed=args.seed))
    edit.save(args.out)
    print(f"{args.operator} on the {args.world} world's {len(facts.forget)} forget facts: "
          f"{time.perf_counter() - t0:.0f} s, saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
