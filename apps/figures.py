"""Figures of findings: one function per analysis module, drawn only from a finding's arrays,
scores and meta, so a saved run (`Finding.from_json`) redraws without any model.

`draw(finding)` dispatches on `finding.name` through `FIGURES`; a module without a figure
function raises, listing those that have one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from probes.base import Finding
from workbench.registry import Registry

FIGURES: Registry[Callable[[Finding], Any]] = Registry("figure")
MODELS = ("M0", "M1", "Mr")


def draw(finding: Finding) -> Any:
    """The plotly figure of `finding`; None when it holds nothing to draw (a module that did not
    read the edit, e.g. because M1 still answers the forget facts)."""
    fn = FIGURES[finding.name]
    return fn(finding) if finding.arrays else None


def _line(title: str, x: Sequence, series: dict[str, Sequence[float]], y_title: str,
          chance: float | None = None, x_title: str = "layer"):
    """One line per series over `x` (layers); a dotted line at `chance` when given."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=[float(v) for v in ys], mode="lines+markers",
                                 name=name))
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      template="plotly_white", height=360)
    return fig


def _per_model(f: Finding, prefix: str) -> dict[str, Any]:
    return {m: f.arrays[f"{prefix}{m}"] for m in MODELS if f"{prefix}{m}" in f.arrays}


@FIGURES.register("logit_lens")
def logit_lens(f: Finding):
    return _line("Logit lens: forget answers read per layer", f.meta["layers"],
                 _per_model(f, "read_rate_"), "fraction of forget answers read",
                 chance=f.scores.get("chance"))


@FIGURES.register("linear_probes")
def linear_probes(f: Finding):
    series = {k.removeprefix("acc_"): v for k, v in f.arrays.items()
              if k.startswith("acc_") and k != "acc_cv_M0"}
    return _line("Linear probes: forget answers decoded per layer", f.meta["layers"], series,
                 "forget decoding accuracy", chance=f.scores.get("chance"))


@FIGURES.register("clusters")
def clusters(f: Finding):
    return _line("Forget vs holdout separation (pooled spreads)", f.meta["layers"],
                 _per_model(f, "sep_forget_holdout_"), "centroid distance / spread")


@FIGURES.register("signal")
def signal(f: Finding):
    return _line("Unlearning signal: forget-vs-holdout detector accuracy", f.meta["layers"],
                 _per_model(f, "detect_fh_"), "cross-validated accuracy")


@FIGURES.register("behavior_pressure")
def behavior_pressure(f: Finding):
    import plotly.graph_objects as go

    models = f.meta.get("models") or [m for m in MODELS if f"{m}_forget_acc" in f.arrays]
    keys = [k.removeprefix(f"{models[0]}_") for k in f.arrays if k.startswith(f"{models[0]}_")]
    fig = go.Figure([go.Bar(name=m, x=[k.removesuffix("_acc") for k in keys],
                            y=[float(f.arrays[f"{m}_{k}"][0]) for k in keys]) for m in models])
    fig.update_layout(title="Behaviour under pressure", yaxis_title="accuracy", barmode="group",
                      template="plotly_white", height=360)
    return fig


@FIGURES.register("activation_patching")
def activation_patching(f: Finding):
    import plotly.graph_objects as go

    window = f.meta.get("window")
    z, names = [], []
    for p in f.meta["points"]:
        row = [float(v) for v in f.arrays[f"recovery_{p}"]]
        z.append(row)
        names.append(p)
        win = f.arrays.get(f"recovery_window{window}_{p}")
        if win is not None:  # by first block: the last window - 1 blocks start no window
            z.append([float(v) for v in win] + [None] * (len(row) - len(win)))
            names.append(f"{p} (window {window}, by first block)")
    n = len(z[0]) if z else 0
    fig = go.Figure(go.Heatmap(z=z, x=list(range(n)), y=names, zmin=0, zmax=1,
                               colorscale="Viridis", colorbar={"title": "recovery"}))
    fig.update_layout(title="Activation patching: M0 -> M1 recovery of the forget answers",
                      xaxis_title="layer", template="plotly_white", height=360)
    return fig


@FIGURES.register("attribution_patching")
def attribution_patching(f: Finding):
    import plotly.graph_objects as go

    fig = go.Figure()
    for p in f.meta["points"]:
        est = f.arrays[f"attribution_{p}"]
        fig.add_trace(go.Scatter(x=list(range(len(est))), y=est.tolist(),
                                 name=f"{p} (attribution)", mode="lines+markers"))
        if f"exact_{p}" in f.arrays:
            fig.add_trace(go.Scatter(x=list(range(len(est))), y=f.arrays[f"exact_{p}"].tolist(),
                                     name=f"{p} (exact)", mode="lines", line={"dash": "dot"}))
    fig.update_layout(title="Attribution patching vs exact patching (M0 -> M1 recovery)",
                      xaxis_title="layer", yaxis_title="recovery", template="plotly_white",
                      height=360)
    return fig


@FIGURES.register("parameter_restoration")
def parameter_restoration(f: Finding):
    import plotly.graph_objects as go

    recs = [float(v) for v in f.arrays["recovery"]]
    fig = go.Figure(go.Bar(x=f.meta["labels"], y=recs))
    fig.update_layout(title="Parameter restoration: M0 weights -> M1, forget-answer recovery",
                      yaxis_title="recovery (0 = M1, 1 = M0)", yaxis_range=[min(0, *recs), 1.05],
                      template="plotly_white", height=380)
    return fig


@FIGURES.register("relearning")
def relearning(f: Finding):
    """Steps-to-recover curves: each variant's best learning rate, for M1 and the floor model."""
    import plotly.graph_objects as go

    fig = go.Figure()
    lrs = [float(x) for x in f.arrays["lrs"]]
    for v in f.meta["variants"]:
        for who, dash in (("M1", "solid"), ("floor", "dot")):
            rec = f.arrays.get(f"{v}_recovery_{who}")
            if rec is None or not np.isfinite(rec).any():
                continue
            i = int(np.where(np.isfinite(rec), rec, -np.inf).max(1).argmax())  # best lr
            label = f.meta["floor"] if who == "floor" else "M1"
            fig.add_trace(go.Scatter(x=f.arrays[f"{v}_steps"].tolist(), y=rec[i].tolist(),
                                     mode="lines+markers", line={"dash": dash},
                                     name=f"{v}: {label} (lr {lrs[i]:g})"))
    fig.update_layout(title="Relearning: held-out forget facts recovered per fine-tuning step",
                      xaxis_title="relearning step", yaxis_title="recovery (0 = M1, 1 = M0)",
                      template="plotly_white", height=360)
    return fig
