"""`workbench controls build`, `workbench calibrate`, `workbench meta-eval`: known-truth pools,
the verdict's calibration fitted on them, and every module judged on pools it never saw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, handles_errors, out
from workbench.atomic import write_text

controls_app = typer.Typer(no_args_is_help=True, help="Known-truth control pools.")
Pools = Annotated[list[Path], typer.Option("--pool", help="a built pool directory (repeatable)")]


@controls_app.command("build")
@handles_errors
def build(
    out_dir: Annotated[Path, typer.Option("--out", help="pool directory (resumes if present)")],
    seed: Annotated[int, typer.Option(help="world seed (the controls use it too)")] = 0,
    base: Annotated[str, typer.Option(
        help="the world: 'toy', or a model spec for its fictitious-people world "
             "(e.g. smollm2-135m)")] = "toy",
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="build only this control (repeatable)")] = None,
    module: Annotated[list[str] | None, typer.Option(
        "--module", help="analysis module to score with (repeatable; default: all)")] = None,
    device: Device = None,
) -> None:
    """Build a world's known-truth pool: each control, its validity, its findings."""
    from probes.pools import build_pool
    from workbench.worlds import build_world

    world = build_world(base, seed=seed, progress=True)
    doc = build_pool(world, out_dir, modules=module or None, seed=seed, only=only or (),
                     progress=True, device=device)
    t = Table(title=f"pool of {doc['world']} seed {doc['world_seed']}")
    for col in ("control", "truth", "status", "forget", "retain", "reason"):
        t.add_column(col)
    for r in doc["controls"]:
        acc = r.get("accuracy") or {}  # none when the control could not be built
        t.add_row(r["name"], r["truth"], r["status"],
                  *(f"{acc[s]:.0%}" if s in acc else "-" for s in ("forget", "retain")),
                  r.get("reason") or "")
    out.print(t)
    out.print(f"written to {out_dir}")


@controls_app.command("robustness")
@handles_errors
def robustness_build(
    pool: Annotated[Path, typer.Option("--pool", help="a built pool directory")],
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="perturb only this control (repeatable; the oracle always)")] = None,
    module: Annotated[list[str] | None, typer.Option(
        "--module", help="analysis module to score with (repeatable; default: the pool's)")
    ] = None,
    device: Device = None,
) -> None:
    """Perturb a pool's removed and suppressed controls (4-bit quantization, one epoch of
    relearning), score them, and write their findings into the pool for `meta-eval`."""
    from probes.robustness import build_robustness

    where = build_robustness(pool, modules=module or None, only=only or (), progress=True,
                             device=device)
    out.print(f"written to {where}")


def robustness_table(rob: dict) -> Table:
    """Robustness per figure: each perturbation's mean ratio and their harmonic mean."""
    from probes.robustness import PERTURBATIONS

    def num(v: float) -> str:
        return "-" if v != v else f"{v:.3f}"

    t = Table(title="robustness: the edit's shift against the oracle's (1 = no more than it); "
                    "read / unread edits per perturbation")
    for col in ("figure", *PERTURBATIONS, "robustness", "read", "unread"):
        t.add_column(col)
    for name, r in rob.items():
        t.add_row(name, *(num(r[k]) for k in (*PERTURBATIONS, "robustness")),
                  " / ".join(str(r[f"n_{k}"]) for k in PERTURBATIONS),
                  " / ".join(str(r[f"unread_{k}"]) for k in PERTURBATIONS))
    return t


def confusion_table(ev: dict, title: str) -> Table:
    """An evaluation's confusion matrix (rows: truth, columns: verdict) with its headline."""
    from probes.verdict import VERDICTS

    t = Table(title=f"{title}: accuracy {ev['accuracy']:.0%} of {ev['n']}, removal-score AUC "
                    f"{ev['removal_auc']:.3f}")
    t.add_column("truth \\ verdict")
    for v in VERDICTS:
        t.add_column(v, justify="right")
    for truth, row in ev["confusion"].items():
        t.add_row(truth, *(str(row[v]) for v in VERDICTS))
    return t


def _entries(pools: list[Path]):
    from probes.pools import load_pool

    return [e for p in pools for e in load_pool(p)]


@handles_errors
def calibrate(
    pool: Pools,
    out_file: Annotated[Path, typer.Option("--out", help="calibration JSON to write")],
    version: Annotated[str | None, typer.Option(help="version string (default: pools+date)")] = None,
) -> None:
    """Fit the verdict's cuts and evidence weights on pools; write a versioned calibration."""
    from probes.calibrate import evaluate, fit

    entries = _entries(pool)
    cal = fit(entries, version)
    write_text(out_file, json.dumps(cal.to_json(), indent=1) + "\n")
    ev = evaluate(entries, cal)
    out.print(f"calibration {cal.version}: {len(entries)} controls, accuracy on its own pools "
              f"{ev['accuracy']:.0%}, removal-score AUC {ev['removal_auc']:.3f}")
    out.print(f"written to {out_file}")


@handles_errors
def meta_eval(
    pool: Pools,
    calibration: Annotated[Path | None, typer.Option(
        help="calibration file (default: the shipped one)")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="write the report as JSON")] = None,
) -> None:
    """Judge the verdict and every module on pools: confusion matrix, accuracy, faithfulness,
    and robustness where the pools hold perturbed findings."""
    from probes.calibrate import evaluate, faithfulness
    from probes.robustness import robustness
    from probes.verdict import Calibration

    cal = Calibration.load(calibration)
    entries = _entries(pool)
    ev, faith = evaluate(entries, cal), faithfulness(entries, cal)
    perturbed = [p for p in pool if (p / "robustness").is_dir()]
    rob = robustness(perturbed, cal) if perturbed else {}
    out.print(confusion_table(ev, f"verdicts ({cal.version})"))
    f = Table(title="faithfulness: AUC removers vs suppressors")
    for col in ("module", "n", "reading AUC", "figure", "figure AUC"):
        f.add_column(col)
    for name, r in faith.items():
        f.add_row(name, str(r["n"]), f"{r['reading_auc']:.3f}", r["figure"],
                  f"{r['figure_auc']:.3f}")
    out.print(f)
    if rob:
        out.print(robustness_table(rob))
    else:
        out.print("robustness: no pool has perturbed findings (`workbench controls robustness "
                  "--pool DIR` makes them)")
    wrong = [r for r in ev["rows"] if not r["right"]]
    for r in wrong:
        out.print(f"wrong: {r['control']} ({r['world']}) is {r['truth']}, read {r['verdict']} "
                  f"(score {r['removal_score']:.2f})")
    if out_file is not None:
        write_text(out_file, json.dumps({"evaluation": ev, "faithfulness": faith,
                                          "robustness": rob}, indent=1))
        out.print(f"written to {out_file}")
