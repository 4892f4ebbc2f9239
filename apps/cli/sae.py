"""`workbench sae ...`: train an SAE, show its quality, list a subject's forget features."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apps.cli.common import Device, Facts, Model, err, handles_errors, out
from workbench.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders: train, inspect, features.")


@app.command("train")
@handles_errors
def train(
    *,
    model: Model = "smollm2-135m",
    layer: Annotated[int | None, typer.Option(help="layer (default: the middle one)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the SAE to")],
    point: Annotated[str, typer.Option(
        help="resid_pre | resid_post | attn_out | mlp_out")] = "resid_post",
    arch: Annotated[str, typer.Option(help="standard | topk | jumprelu")] = "topk",
    width: Annotated[int, typer.Option(help="number of features")] = 1024,
    k: Annotated[int, typer.Option(help="TopK: active features per token")] = 32,
    tokens: Annotated[int, typer.Option(help="activation vectors to train on")] = 60_000,
    epochs: Annotated[int, typer.Option(help="passes over the activations")] = 6,
    corpus: Annotated[Path | None, typer.Option(
        help="text file, one text per line (default: standard-library docstring prose + the "
        "fact set)")] = None,
    facts: Annotated[str | None, typer.Option(
        help="fact set mixed into the default corpus")] = "smollm2",
    seed: Annotated[int, typer.Option()] = 0,
    device: Device = None,
) -> None:
    """Train an SAE on the subject's activations and save it in SAELens' format."""
    from saes.train import SAETrainConfig, save_sae, train_sae
    from workbench.corpus import default_corpus, read_corpus
    from workbench.facts import load_facts
    from workbench.models import load_subject

    subject = load_subject(model, device=device)
    if corpus is not None:
        texts = read_corpus(corpus)
    else:
        fs = None
        if facts:
            try:
                fs = load_facts(facts)
            except WorkbenchError as e:
                err.print(f"[yellow]no facts mixed into the corpus:[/] {e}")
        texts = default_corpus(fs, seed=seed)
    cfg = SAETrainConfig(layer=layer, point=point, arch=arch, width=width, k=k,
                         tokens=tokens, epochs=epochs, seed=seed)
    trained = train_sae(subject, texts, cfg, progress=True)
    path = save_sae(trained, out_dir)
    t = Table(title=f"SAE {trained.hook} of {subject.name} -> {path}")
    for col in ("metric", "value"):
        t.add_column(col)
    for key, value in asdict(trained.metrics).items():
        t.add_row(key, str(value))
    t.add_row("train_seconds", f"{trained.train_seconds:.1f}")
    out.print(t)


@app.command("features")
@handles_errors
def features(
    sae: Annotated[str, typer.Argument(help="SAE directory or release:<release>:<sae_id>")],
    model: Model = "smollm2-135m",
    facts: Facts = "smollm2",
    top: Annotated[int, typer.Option(help="how many features")] = 20,
    max_retain_rate: Annotated[float, typer.Option(
        help="keep features firing on at most this fraction of retain tokens")] = 0.01,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    device: Annotated[str | None, typer.Option()] = None,
) -> None:
    """The SAE features of the forget facts, ranked, with their forget/retain statistics."""
    from saes.features import features_table, forget_features
    from saes.load import check_fits, resolve_sae
    from workbench.facts import load_facts
    from workbench.models import load_subject

    subject = load_subject(model, device=device)
    loaded = resolve_sae(sae, device=subject.device)
    check_fits(loaded, subject)
    fs = load_facts(facts)
    rows = features_table(forget_features(subject, loaded, fs.forget, fs.retain, top,
                                          max_retain_rate))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"forget features of {loaded.source} at {loaded.hook}")
    for col in ("feature", "forget_rate", "retain_rate", "forget_mean", "retain_mean", "score"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*(str(r[c]) for c in ("feature", "forget_rate", "retain_rate", "forget_mean",
                                          "retain_mean", "score")))
    out.print(t)
