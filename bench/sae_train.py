"""Train one SAE on the bundled model (`saes.train.train_sae`, the default corpus) and record its
quality and time: the defaults' figures, and those of the alternatives the defaults were chosen
over (`saes.train.SAETrainConfig`).

    python bench/sae_train.py                             # the defaults (layer 15 of SmolLM2-135M)
    python bench/sae_train.py --set width=2048
    python bench/sae_train.py --set batch_size=1024 lr=1e-3

Prints EV, loss recovered, dead features and seconds (capture included); writes them to
`bench/results/sae_train.json`, one entry per set of overrides. Minutes on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="SAETrainConfig overrides")
    args = ap.parse_args()
    from rich.console import Console

    from saes.train import SAETrainConfig, train_sae
    from workbench.corpus import default_corpus
    from workbench.errors import WorkbenchError
    from workbench.models import load_subject
    from workbench.options import parse_value

    hints = typing.get_type_hints(SAETrainConfig)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in hints:
            raise WorkbenchError(f"--set expects key=value with a key of SAETrainConfig "
                                 f"({', '.join(sorted(hints))}), got {item!r}")
        overrides[key] = parse_value(value, hints[key], key)
    cfg = SAETrainConfig(**overrides)
    subject = load_subject(args.model, device="cpu")
    trained = train_sae(subject, default_corpus(), cfg, progress=True)
    m = trained.metrics
    con = Console()
    con.print(f"{subject.name} {trained.hook} {' '.join(args.set) or '(defaults)'}: "
              f"EV {m.explained_variance:.3f}, loss recovered {m.loss_recovered:.3f}, "
              f"dead {m.dead_fraction:.1%}, {trained.train_seconds:.0f} s incl. capture")
    from results_io import relative, write_results  # bench/results_io.py, next to this script

    path = write_results("sae_train", vars(args), {
        "subject": subject.name, "hook": trained.hook, "config": dataclasses.asdict(cfg),
        "metrics": dataclasses.asdict(m), "train_seconds": round(trained.train_seconds, 1)})
    con.print(f"[dim]written to {relative(path)}[/]")


if __name__ == "__main__":
    main()
