"""`workbench sae ...`: train an SAE, show its quality, list a subject's forget features."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.errors import WorkbenchError

sae_app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders: train, inspect, features.")
console = Console(stderr=True)
out = Console()


def _fail(e: Exception) -> typer.Exit:
    from workbench.cli import fail

    return fail(e)


@sae_app.command("train")
def train_cmd(
    model: str = typer.Option("smollm2-135m", help="model spec"),
    layer: int | None = typer.Option(None, help="layer (default: the middle one)"),
    out_dir: Path = typer.Option(..., "--out", help="directory to write the SAE to"),
    point: str = typer.Option("resid_post", help="resid_pre | resid_post | attn_out | mlp_out"),
    arch: str = typer.Option("topk", help="standard | topk | jumprelu"),
    width: int = typer.Option(1024, help="number of features"),
    k: int = typer.Option(32, help="TopK: active features per token"),
    tokens: int = typer.Option(60_000, help="activation vectors to train on"),
    epochs: int = typer.Option(6, help="passes over the activations"),
    corpus: Path | None = typer.Option(None, help="text file, one text per line (default: "
                                       "standard-library docstring prose + the fact set)"),
    facts: str | None = typer.Option("smollm2", help="fact set mixed into the default corpus"),
    seed: int = typer.Option(0),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: GPU if present)"),
) -> None:
    """Train an SAE on the subject's activations and save it in SAELens' format."""
    from saes.train import SAETrainConfig, save_sae, train_sae
    from workbench.corpus import default_corpus, read_corpus
    from workbench.facts import load_facts
    from workbench.models import load_subject

    try:
        subject = load_subject(model, device=device)
        if corpus is not None:
            texts = read_corpus(corpus)
        else:
            fs = None
            if facts:
                try:
                    fs = load_facts(facts)
                except WorkbenchError as e:
                    console.print(f"[yellow]no facts mixed into the corpus:[/] {e}")
            texts = default_corpus(fs, seed=seed)
        cfg = SAETrainConfig(layer=layer, point=point, arch=arch, width=width, k=k,
                             tokens=tokens, epochs=epochs, seed=seed)
        trained = train_sae(subject, texts, cfg, progress=True)
        path = save_sae(trained, out_dir)
    except WorkbenchError as e:
        raise _fail(e) from None
    t = Table(title=f"SAE {trained.hook} of {subject.name} -> {path}")
    for col in ("metric", "value"):
        t.add_column(col)
    for key, value in asdict(trained.metrics).items():
        t.add_row(key, str(value))
    t.add_row("train_seconds", f"{trained.train_seconds:.1f}")
    out.print(t)


@sae_app.command("features")
def features_cmd(
    sae: str = typer.Argument(..., help="SAE directory or release:<release>:<sae_id>"),
    model: str = typer.Option("smollm2-135m", help="model spec"),
    facts: str = typer.Option("smollm2", help="fact file or built-in name"),
    top: int = typer.Option(20, help="how many features"),
    max_retain_rate: float = typer.Option(0.01, help="keep features firing on at most this "
                                          "fraction of retain tokens"),
    as_json: bool = typer.Option(False, "--json"),
    device: str | None = typer.Option(None),
) -> None:
    """The SAE features of the forget facts, ranked, with their forget/retain statistics."""
    from saes.features import features_table, forget_features
    from saes.load import check_fits, resolve_sae
    from workbench.facts import load_facts
    from workbench.models import load_subject

    try:
        subject = load_subject(model, device=device)
        loaded = resolve_sae(sae, device=subject.device)
        check_fits(loaded, subject)
        fs = load_facts(facts)
        rows = features_table(forget_features(subject, loaded, fs.forget, fs.retain, top,
                                              max_retain_rate))
    except WorkbenchError as e:
        raise _fail(e) from None
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


def register(app: typer.Typer) -> None:
    """Called by `workbench.cli` to add the `sae` command group."""
    app.add_typer(sae_app, name="sae")
