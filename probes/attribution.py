"""Attribution patching: the first-order estimate of activation patching from one forward and
one backward pass on M1, `(a_M0 - a_M1) . d logp(answer) / d a` at the last prompt token, for
every layer and hook point at once. Reported with its agreement with exact patching."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import gate, seed_all
from probes.patch_engine import _module, answer_logprob_from_logits, patch
from probes.patching import PatchingThresholds, _read, divergence, recovery
from probes.restoration import _logprobs
from workbench.batching import chunks, encode
from workbench.capture import POINTS, capture
from workbench.errors import LayerError
from workbench.facts import FactSet
from workbench.models import Subject, hidden_of
from workbench.placement import backward_rows, token_width


@dataclass(frozen=True)
class AttributionThresholds(PatchingThresholds):
    """Activation patching's reading thresholds, and the agreement with exact patching below
    which the gradient estimate is not trusted (Pearson correlation over layers x points)."""

    min_correlation: float = 0.5


def _gradients(m1: Subject, prompts, answers, layers, points, batch_size: int
               ) -> tuple[dict[tuple[int, str], Tensor], dict[tuple[int, str], Tensor], Tensor]:
    """M1's activations and d(answer log-prob)/d(activation) at each row's last prompt token."""
    acts: dict[tuple[int, str], list[Tensor]] = {}
    grads: dict[tuple[int, str], list[Tensor]] = {}
    lps = []
    model = m1.model
    for sl in chunks(len(prompts), batch_size):
        b = encode(m1.tokenizer, prompts[sl], answers[sl], device=m1.device)
        saved: dict[tuple[int, str], Tensor] = {}
        handles = []

        def leaf(_m, _a, out):  # make the graph exist even when no weight requires grad
            return out if out.requires_grad else out.detach().requires_grad_()

        handles.append(model.get_input_embeddings().register_forward_hook(leaf))
        for L in layers:
            for p in points:
                mod = _module(model, L, p)
                if p == "resid_pre":
                    def pre(_m, args, kwargs, key=(L, p), saved=saved):
                        saved[key] = args[0] if args else kwargs["hidden_states"]

                    handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
                else:
                    def post(_m, _a, out, key=(L, p), saved=saved):
                        saved[key] = hidden_of(out)

                    handles.append(mod.register_forward_hook(post))
        try:
            with torch.enable_grad():
                out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
                lp = answer_logprob_from_logits(out.logits[:, :-1], b.input_ids[:, 1:],
                                                b.answer_mask[:, :-1])
                keys = list(saved)
                # rows are independent, so the gradient of the sum is each row's own gradient.
                # A hook of M1 that computes without a graph (an SAE clamp) cuts the gradient
                # path: those points get a zero gradient, and the agreement with exact patching
                # the finding reports shows what the approximation missed.
                live = [k for k in keys if saved[k].requires_grad]
                gs_live = (torch.autograd.grad(lp.sum(), [saved[k] for k in live],
                                               allow_unused=True)
                           if live and lp.requires_grad else [None] * len(live))
                by_key = dict(zip(live, gs_live, strict=True))
                gs = [by_key.get(k) for k in keys]
        finally:
            for h in handles:
                h.remove()
        rows = torch.arange(len(b.last), device=b.last.device)
        for k, gr in zip(keys, gs, strict=True):
            a = saved[k].detach()[rows, b.last]
            acts.setdefault(k, []).append(a)
            grads.setdefault(k, []).append(torch.zeros_like(a) if gr is None else gr[rows, b.last])
        lps.append(lp.detach())
    return ({k: torch.cat(v) for k, v in acts.items()}, {k: torch.cat(v) for k, v in grads.items()},
            torch.cat(lps))


def attribution_deltas(m0: Subject, m1: Subject, prompts: Sequence[str], answers: Sequence[str],
                       points: Sequence[str] = ("resid_post",), batch_size: int = 32
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """First-order estimate of (patched - M1) answer log-prob, {point: [layer, facts]}, and M1's
    answer log-probs [facts]: one capture on M0, one forward + backward on M1."""
    layers = list(range(m1.n_layers))
    a0 = capture(m0, list(prompts), layers, points, position="last", batch_size=batch_size)
    # the backward keeps every layer's activations and vocabulary-wide log-probs per row: rows
    # per pass from a memory budget (SmolLM2-135M on the people world, three points: 32 rows at
    # once raised the peak by 1.33 GB in 9.5 s, 8 rows by 0.32 GB in 4.9 s, the same figures;
    # the budget gives it 4)
    rows = backward_rows(m1, token_width(m1, prompts, answers), batch_size)
    a1, gr, lp1 = _gradients(m1, list(prompts), list(answers), layers, points, rows)
    deltas = {p: torch.stack([((a0.layer(L, p).to(m1.device) - a1[(L, p)]) * gr[(L, p)]).sum(-1)
                              for L in layers]).float().cpu().numpy() for p in points}
    return deltas, lp1.cpu().numpy()


def _attribution_patching(ctx: ProbeContext, th: AttributionThresholds,
                          points: Sequence[str] = ("resid_post", "mlp_out", "attn_out"),
                          exact: Finding | None = None, compare: bool = True, top_k: int = 5,
                          batch_size: int = 32) -> Finding:
    m0, m1, facts = ctx.m0, ctx.m1, ctx.facts
    exact = exact if exact is not None else ctx.findings.get("activation_patching")
    seed_all(ctx.seed)
    g = gate(m0, m1, facts, th)
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        raise LayerError(f"unknown hook point(s) {unknown}; expected some of {POINTS}")
    if g.blocker():
        return Finding("attribution_patching", "inconclusive", g.blocker())
    fs = facts.forget
    prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
    layers = list(range(m1.n_layers))
    deltas, lp1 = attribution_deltas(m0, m1, prompts, answers, points, batch_size)
    lp0 = _logprobs(m0.model, m0.tokenizer, prompts, answers, None, batch_size, m0.device)
    arrays: dict[str, np.ndarray] = {"lp_m0": lp0, "lp_m1": lp1}
    est = {}
    for p in points:
        est[p] = recovery(lp1 + deltas[p], lp1, lp0, th.min_gap)[0]
        arrays[f"attribution_{p}"] = est[p]
    scores: dict[str, float] = {}
    if exact is not None or compare:
        ex = _exact(m0, m1, prompts, answers, points, exact, th.min_gap)
        flat_a = np.concatenate([est[p] for p in points])
        flat_e = np.concatenate([ex[p] for p in points])
        for p in points:
            arrays[f"exact_{p}"] = ex[p]
        k = min(top_k, len(flat_a))
        scores["correlation"] = (float(np.corrcoef(flat_a, flat_e)[0, 1])
                                 if flat_a.std() > 0 and flat_e.std() > 0 else float("nan"))
        scores["top_k_overlap"] = len(set(np.argsort(-flat_a)[:k]) & set(np.argsort(-flat_e)[:k])) / k
        scores["max_abs_error"] = float(np.abs(flat_a - flat_e).max())
    div = divergence(m0, m1, prompts)
    single = [(float(est[p][L]), f"{p}@{L}") for p in points if p in ("mlp_out", "attn_out")
              for L in layers]
    best, label = max(single) if single else (float("nan"), "")
    scores.update({"best_single_estimate": best, "gap_nats": float(np.mean(lp0 - lp1))})
    reading, reason = _read(th, div, best, label, est.get("resid_post"), float("nan"),
                            scores["gap_nats"])
    corr = scores.get("correlation", float("nan"))
    if reading != "inconclusive" and "correlation" in scores and not corr >= th.min_correlation \
            and div.max() >= th.identical:
        reading, reason = "inconclusive", (f"the gradient estimate disagrees with exact patching "
                                           f"(correlation {corr:.2f}); use activation patching")
    elif "correlation" in scores:
        reason += f" (first-order estimate; correlation with exact patching {corr:.2f})"
    return Finding("attribution_patching", reading, reason, scores, arrays,
                   meta={"points": list(points), "top_k": top_k, "n_facts": len(fs),
                         "seed": ctx.seed})


PROBE = ProbeSpec("attribution_patching", AttributionThresholds, _attribution_patching)


def attribution_patching(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                         points: Sequence[str] = ("resid_post", "mlp_out", "attn_out"),
                         exact: Finding | None = None, compare: bool = True, top_k: int = 5,
                         batch_size: int = 32, seed: int = 0, progress: bool = False,
                         device: str | None = None,
                         thresholds: AttributionThresholds | None = None) -> Finding:
    """Estimate M0 -> M1 patching recovery for every layer and point from one backward pass; with
    `exact` (an `activation_patching` Finding; in a battery, the one that ran before) or
    `compare` (patch here), report agreement with exact patching."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds,
                 points=points, exact=exact, compare=compare, top_k=top_k, batch_size=batch_size)


def _exact(m0, m1, prompts, answers, points, exact: Finding | None, min_gap) -> dict:
    if exact is not None and all(f"recovery_{p}" in exact.arrays for p in points):
        return {p: np.asarray(exact.arrays[f"recovery_{p}"]) for p in points}
    n, nf = m1.n_layers, len(prompts)
    rows = [(f, ((L, p, 0),)) for p in points for L in range(n) for f in range(nf)]
    run = patch(m1, m0, prompts, answers, rows)
    pooled = recovery(run.logprobs.reshape(len(points) * n, nf), run.base, run.source, min_gap)[0]
    return {p: pooled[i * n:(i + 1) * n] for i, p in enumerate(points)}

