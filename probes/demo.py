"""The demo pipeline (`workbench demo`): the main job on the bundled model, offline.

Loads the model, scores its answers on a fact set, finds the layer at which each answer forms
(logit lens), and writes a JSON summary plus a plotly HTML figure. It prints nothing: callers
render the returned `DemoRun` (the CLI as a table).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probes.logit_lens import answer_rank_by_layer
from workbench.atomic import write_text
from workbench.behavior import FactResult, evaluate, summarize
from workbench.facts import load_facts
from workbench.models import load_subject


@dataclass(frozen=True)
class DemoRun:
    """What `run_demo` produced: `doc` is what summary.json holds; `results`, `top1_from` and
    `top10_from` are per fact, in the fact set's order (layer -1: never stays in the top k)."""

    doc: dict[str, Any]
    results: list[FactResult]
    top1_from: np.ndarray
    top10_from: np.ndarray
    summary_path: Path
    figure_path: Path


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


def run_demo(model: str = "smollm2-135m", facts: str = "smollm2",
             out_dir: Path = Path("runs/demo"), device: str | None = None,
             progress: Callable[[str], None] | None = None) -> DemoRun:
    """Run the demo and write `out_dir/summary.json` and `out_dir/answer_formation.html`.

    `progress`, if given, is called with the name of each stage as it starts."""
    step = progress or (lambda _stage: None)
    t0 = time.perf_counter()
    step("load")
    fs = load_facts(facts)
    subject = load_subject(model, device=device)
    t_load = time.perf_counter() - t0
    step("evaluate")
    results = evaluate(subject, fs)
    step("logit lens")
    ranks = np.asarray(answer_rank_by_layer(subject, fs))  # [layers, facts]
    top1, top10 = forms_at(ranks, 1), forms_at(ranks, 10)
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
    step("write")
    summary_path, figure_path = out_dir / "summary.json", out_dir / "answer_formation.html"
    write_text(summary_path, json.dumps(doc, indent=2))
    fig = rank_figure(ranks, [f"{r.split}:{r.id}" for r in results],
                      f"Where each answer forms in {subject.name} (rank of the answer token)")
    write_text(figure_path, fig.to_html(include_plotlyjs=True))
    return DemoRun(doc, list(results), top1, top10, summary_path, figure_path)
