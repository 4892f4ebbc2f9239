"""`workbench demo`: the main job on the bundled model, offline.

Loads SmolLM2-135M-Instruct, shows its answers on the built-in fact set and the layer at which
each answer forms (logit lens), and writes a JSON summary plus a plotly HTML figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from workbench.atomic import write_text
from workbench.errors import WorkbenchError

out = Console()


def forms_at(ranks: np.ndarray, top: int = 1) -> np.ndarray:
    """Per fact, the first layer from which the answer stays within the top `top` to the end
    (-1 if it never does). `ranks` is [layers, facts] with rank 0 = top-1."""
    inside = ranks < top
    stays = np.flip(np.logical_and.accumulate(np.flip(inside, 0), 0), 0)
    first = np.where(stays.any(0), stays.argmax(0), -1)
    return first


def rank_figure(ranks: np.ndarray, labels: list[str], title: str):
    import plotly.graph_objects as go

    z = np.log10(ranks + 1)
    fig = go.Figure(go.Heatmap(z=z.T, x=list(range(ranks.shape[0])), y=labels,
                               colorscale="Viridis_r", colorbar={"title": "log10(rank+1)"},
                               customdata=ranks.T, hovertemplate="layer %{x}<br>%{y}<br>"
                               "rank %{customdata}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="layer (logit lens on resid_post)",
                      height=max(400, 14 * len(labels)), yaxis={"autorange": "reversed"})
    return fig


def run_demo(model: str = "smollm2-135m", facts: str = "smollm2", out_dir: Path = Path("runs/demo"),
             device: str | None = None) -> dict:
    from probes.logit_lens import answer_rank_by_layer
    from workbench.behavior import evaluate, summarize
    from workbench.facts import load_facts
    from workbench.models import load_subject

    t0 = time.perf_counter()
    fs = load_facts(facts)
    subject = load_subject(model, device=device)
    t_load = time.perf_counter() - t0
    results = evaluate(subject, fs)
    ranks = np.asarray(answer_rank_by_layer(subject, fs))  # [layers, facts]
    top1, top10 = forms_at(ranks, 1), forms_at(ranks, 10)
    table = Table(title=f"{subject.name}: answers on {fs.name} ({len(fs)} facts)")
    for col in ("split", "prompt", "answer", "model says", "ok", "log p", "top-10 from",
                "top-1 from"):
        table.add_column(col, overflow="fold")
    for r, a, b in zip(results, top10, top1):
        table.add_row(r.split, r.prompt, r.answer.strip(), r.generated.strip()[:24],
                      "[green]yes[/]" if r.correct else "[red]no[/]", f"{r.logprob:.2f}",
                      "-" if a < 0 else f"L{a}", "-" if b < 0 else f"L{b}")
    out.print(table)
    summary = summarize(results)
    formed = top1[top1 >= 0]
    doc = {"model": subject.name, "facts": fs.name, "n_layers": subject.n_layers,
           "splits": summary,
           "answer_forms_at": {"median_top1_layer": float(np.median(formed)) if len(formed) else
                               None, "median_top10_layer": float(np.median(top10[top10 >= 0]))
                               if (top10 >= 0).any() else None},
           "per_fact": [{"id": r.id, "split": r.split, "correct": r.correct,
                         "logprob": r.logprob, "top1_from_layer": int(b),
                         "top10_from_layer": int(a)} for r, a, b in zip(results, top10, top1)],
           "seconds": {"load": round(t_load, 2), "total": round(time.perf_counter() - t0, 2)}}
    write_text(out_dir / "summary.json", json.dumps(doc, indent=2))
    fig = rank_figure(ranks, [f"{r.split}:{r.id}" for r in results],
                      f"Where each answer forms in {subject.name} (rank of the answer token)")
    write_text(out_dir / "answer_formation.html", fig.to_html(include_plotlyjs=True))
    out.print(", ".join(f"{s}: {v['accuracy']:.0%} of {v['n']}" for s, v in summary.items()))
    out.print(f"Median layer where the answer becomes top-1: {doc['answer_forms_at']['median_top1_layer']} "
              f"of {subject.n_layers}; wrote {out_dir / 'summary.json'} and "
              f"{out_dir / 'answer_formation.html'} in {doc['seconds']['total']} s")
    return doc


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(model: str = typer.Option("smollm2-135m", help="model spec"),
             facts: str = typer.Option("smollm2", help="fact file or built-in name"),
             out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="output directory"),
             device: str | None = typer.Option(None, help="cpu, cuda, ... (default: GPU if any)"),
             ) -> None:
        """The main job: the bundled model's answers on the built-in facts, and where they form."""
        from workbench.cli import _quiet_hf, fail

        _quiet_hf()
        try:
            run_demo(model, facts, out_dir, device)
        except WorkbenchError as e:
            raise fail(e) from None
