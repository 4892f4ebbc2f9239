"""Feature views for the app and notebooks: top contexts, histogram, logit attribution, rates.

Everything returns data, an HTML string or a plotly figure; no UI framework code lives here.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from saes.activations import MAX_CHARS
from saes.features import FeatureStat, latents
from saes.load import LoadedSAE, decoder_rows
from workbench.batching import encode
from workbench.capture import capture
from workbench.errors import WorkbenchError
from workbench.models import Subject, final_norm


@dataclass(frozen=True)
class Context:
    """One text's tokens and one feature's activation at each of them."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]

    @property
    def peak(self) -> float:
        return max(self.activations, default=0.0)


@dataclass(frozen=True)
class TextLatents:
    """Per-text tokens and [pos, d_sae] latents (padding dropped)."""

    tokens: tuple[tuple[str, ...], ...]
    latents: tuple[Tensor, ...]


@torch.no_grad()
def text_latents(subject: Subject, loaded: LoadedSAE, texts: Sequence[str],
                 batch_size: int = 16) -> TextLatents:
    """SAE latents at every token of every text (position 0 included, for display)."""
    if not texts:
        raise WorkbenchError("no texts to show feature activations on")
    texts = [t[:MAX_CHARS] for t in texts]
    point = loaded.hook.split("hook_")[1]
    toks, lats = [], []
    for start in range(0, len(texts), batch_size):
        part = texts[start:start + batch_size]
        acts = capture(subject, part, [loaded.layer], [point], position="all")
        h = acts.layer(loaded.layer, point)
        ids = encode(subject.tokenizer, part).input_ids
        for i, n in enumerate(acts.lengths.tolist()):
            toks.append(tuple(subject.tokenizer.convert_ids_to_tokens(ids[i, :n].tolist())))
            lats.append(latents(loaded, h[i, :n].float()).cpu())
    return TextLatents(tuple(toks), tuple(lats))


def _clean(token: str) -> str:
    return token.replace("\u0120", " ").replace("\u010a", "\\n").replace("\u2581", " ")


def top_contexts(tl: TextLatents, feature: int, n: int = 8,
                 skip_first: bool = True) -> list[Context]:
    """The `n` texts where `feature` peaks highest, with its activation at every token."""
    rows = []
    for toks, z in zip(tl.tokens, tl.latents, strict=True):
        acts = z[:, feature].clone()
        if skip_first and len(acts) > 1:
            acts[0] = 0.0
        rows.append(Context(tuple(_clean(t) for t in toks), tuple(acts.tolist())))
    rows.sort(key=lambda c: -c.peak)
    return [c for c in rows[:n] if c.peak > 0]


def contexts_html(contexts: Sequence[Context], feature: int | None = None) -> str:
    """Contexts as HTML: each token's background is as orange as its activation is high."""
    top = max((c.peak for c in contexts), default=0.0) or 1.0
    title = f"<b>feature {feature}</b>" if feature is not None else ""
    lines = [f"<div style='font-family:monospace;line-height:1.8'>{title}"]
    for c in contexts:
        spans = []
        for tok, a in zip(c.tokens, c.activations, strict=True):
            alpha = max(0.0, a) / top
            spans.append(f"<span title='{a:.3f}' style='background:rgba(255,140,0,{alpha:.2f})'>"
                         f"{html.escape(tok)}</span>")
        lines.append(f"<div>[{c.peak:.2f}] {''.join(spans)}</div>")
    return "\n".join(lines + ["</div>"])


def activation_histogram(tl: TextLatents, feature: int, skip_first: bool = True) -> go.Figure:
    """Histogram of the feature's non-zero activations over every token of the texts."""
    vals = torch.cat([z[1:, feature] if skip_first else z[:, feature] for z in tl.latents])
    nz = vals[vals > 0]
    frac = float((vals > 0).float().mean()) if len(vals) else 0.0
    fig = go.Figure(go.Histogram(x=nz.numpy(), nbinsx=40, marker_color="darkorange"))
    fig.update_layout(title=f"feature {feature}: active on {frac:.2%} of {len(vals)} tokens",
                      xaxis_title="activation", yaxis_title="tokens", bargap=0.05)
    return fig


@torch.no_grad()
def logit_attribution(subject: Subject, loaded: LoadedSAE, feature: int,
                      k: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Tokens the feature's decoder direction promotes and suppresses through the unembedding:
    `W_U @ (W_dec[f] * norm.weight)` (the final norm's scale folded in, its normalisation not)."""
    d = decoder_rows(loaded.sae, feature).detach().to(subject.device, subject.dtype)
    w = getattr(final_norm(subject.model), "weight", None)
    if w is not None:
        d = d * w
    logits = subject.model.get_output_embeddings().weight @ d
    top, bottom = torch.topk(logits, k), torch.topk(-logits, k)

    def named(vals: Tensor, ids: Tensor, sign: float) -> list[tuple[str, float]]:
        toks = subject.tokenizer.convert_ids_to_tokens(ids.tolist())
        return [(_clean(t), sign * float(v)) for t, v in zip(toks, vals, strict=True)]

    return named(top.values, top.indices, 1.0), named(bottom.values, bottom.indices, -1.0)


def logit_figure(promoted: Sequence[tuple[str, float]], suppressed: Sequence[tuple[str, float]],
                 feature: int | None = None) -> go.Figure:
    """Horizontal bars: promoted tokens (positive) and suppressed tokens (negative)."""
    rows = list(promoted) + list(reversed(suppressed))
    fig = go.Figure(go.Bar(x=[v for _, v in rows], y=[repr(t) for t, _ in rows],
                           orientation="h",
                           marker_color=["seagreen" if v > 0 else "firebrick" for _, v in rows]))
    fig.update_layout(title=f"logit attribution of feature {feature}",
                      xaxis_title="direct logit effect", yaxis={"autorange": "reversed"})
    return fig


def rates_figure(stats: Sequence[FeatureStat]) -> go.Figure:
    """Forget vs retain firing rates of the given features (grouped bars)."""
    names = [str(s.feature) for s in stats]
    fig = go.Figure([go.Bar(name="forget", x=names, y=[s.forget_rate for s in stats]),
                     go.Bar(name="retain", x=names, y=[s.retain_rate for s in stats])])
    fig.update_layout(barmode="group", title="firing rate on forget vs retain prompt tokens",
                      xaxis_title="feature", yaxis_title="fraction of tokens",
                      xaxis_type="category")  # feature ids are names, not a number line
    return fig


@dataclass(frozen=True)
class FeatureView:
    """Everything the app shows for one feature."""

    feature: int
    contexts_html: str
    histogram: go.Figure
    logits: go.Figure
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    stat: FeatureStat | None


def feature_view(subject: Subject, loaded: LoadedSAE, feature: int, texts: Sequence[str],
                 stats: Sequence[FeatureStat] = (), n_contexts: int = 8,
                 tl: TextLatents | None = None) -> FeatureView:
    """One feature's view; pass precomputed `tl` to view many features of the same texts."""
    if not 0 <= feature < loaded.sae.cfg.d_sae:
        raise WorkbenchError(f"feature {feature} out of range: the SAE has {loaded.sae.cfg.d_sae}")
    tl = tl or text_latents(subject, loaded, texts)
    promoted, suppressed = logit_attribution(subject, loaded, feature)
    stat = next((s for s in stats if s.feature == feature), None)
    return FeatureView(feature, contexts_html(top_contexts(tl, feature, n_contexts), feature),
                       activation_histogram(tl, feature), logit_figure(promoted, suppressed,
                                                                       feature),
                       tuple(promoted), tuple(suppressed), stat)


__all__ = ["Context", "FeatureView", "TextLatents", "activation_histogram", "contexts_html",
           "feature_view", "logit_attribution", "logit_figure", "rates_figure", "text_latents",
           "top_contexts"]
