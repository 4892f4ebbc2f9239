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
    heat = go.Heatmap(z=z, x=list(range(n)), y=names, zmin=0, zmax=1, colorscale="Viridis",
                      colorbar={"title": "recovery", "len": 0.5, "y": 0.78})
    title = "Activation patching: M0 -> M1 recovery of the forget answers"
    if "uds_ratio" not in f.arrays:
        fig = go.Figure(heat)
        fig.update_layout(title=title, xaxis_title="layer", template="plotly_white", height=360)
        return fig
    from plotly.subplots import make_subplots

    uds = f.scores.get("uds", float("nan"))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("M0 -> M1 recovery",
                                        f"Unlearning Depth Score {uds:.2f} (oracle -> M0, M1 -> M0)"))
    fig.add_trace(heat, row=1, col=1)
    layers = list(range(len(f.arrays["uds_ratio"])))
    for key, name in (("uds_ratio", "erasure ratio (KE blocks)"),
                      ("uds_ke_fraction", "facts the block encodes (KE)")):
        fig.add_trace(go.Scatter(x=layers, y=[float(v) for v in f.arrays[key]], name=name,
                                 mode="lines+markers"), row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], row=2, col=1)
    fig.update_layout(title=title, xaxis2_title="layer", template="plotly_white", height=560)
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


@FIGURES.register("directional_ablation")
def directional_ablation(f: Finding):
    import plotly.graph_objects as go

    labels = f.meta["labels"]
    fig = go.Figure()
    for m, name in (("M1", "M1"), ("Mr", "oracle (floor)")):
        if f"recovery_{m}" not in f.arrays:
            continue
        ok = f.arrays[f"accepted_{m}"]
        recs = [float(v) for v in f.arrays[f"recovery_{m}"]]
        fig.add_trace(go.Bar(name=name, x=labels, y=recs,
                             marker_pattern_shape=["" if a else "x" for a in ok],
                             text=["" if a else "rejected" for a in ok]))
    fig.update_layout(title="Directional ablation: forget-answer recovery per ablated layer "
                            "(hatched: no direction or retain utility broken)",
                      yaxis_title="recovery (0 = M1, 1 = M0)", barmode="group",
                      template="plotly_white", height=380)
    return fig


@FIGURES.register("in_context_recovery")
def in_context_recovery(f: Finding):
    import plotly.graph_objects as go

    conds = f.meta["conditions"]
    fig = go.Figure([go.Bar(name=m, x=conds, y=[float(v) for v in f.arrays[f"acc_{m}"]])
                     for m in MODELS if f"acc_{m}" in f.arrays])
    fig.update_layout(title=f"In-context recovery: forget accuracy after {f.meta['k']} stated "
                            "facts", yaxis_title="forget accuracy", barmode="group",
                      template="plotly_white", height=360)
    return fig


@FIGURES.register("quantization")
def quantization(f: Finding):
    import plotly.graph_objects as go

    qs = ["none", *f.meta.get("quantizers", [])]
    broken = set(f.meta.get("broken", []))
    fig = go.Figure()
    for m in f.meta["models"]:
        have = [q for q in qs if f"forget_{q}_{m}" in f.arrays]
        fig.add_trace(go.Bar(name=m, x=[f"{q} (breaks M0)" if q in broken else q for q in have],
                             y=[float(f.arrays[f"forget_{q}_{m}"].mean()) for q in have]))
    rec = f.scores.get("recovery")
    title = ("Quantization: forget accuracy per quantizer" + (
        f" (best recovery {rec:.0%}, floor {f.scores.get('floor', float('nan')):.0%})"
        if rec is not None else ""))
    fig.update_layout(title=title, yaxis_title="forget accuracy", yaxis_range=[0, 1.05],
                      barmode="group", template="plotly_white", height=360)
    return fig


@FIGURES.register("membership")
def membership(f: Finding):
    import plotly.graph_objects as go
    from sklearn.metrics import roc_curve

    fig = go.Figure()
    for m in f.meta["models"]:
        pos, neg = f.arrays[f"score_forget_{m}"], f.arrays[f"score_unseen_{m}"]
        fpr, tpr, _ = roc_curve(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
        fig.add_trace(go.Scatter(x=fpr.tolist(), y=tpr.tolist(), mode="lines",
                                 name=f"{m} (AUC {f.scores[f'auc_{m}']:.2f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dot", "color": "grey"}))
    fig.update_layout(title="Membership (Min-K%++): forget facts vs never-seen facts",
                      xaxis_title="false positive rate (never-seen flagged)",
                      yaxis_title="true positive rate (forget flagged)",
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
