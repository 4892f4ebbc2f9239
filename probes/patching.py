"""The activation-patching analysis module: which layers / components of M0, patched into M1,
bring the forget answers back (the engine is `probes.patch_engine`), and, with an oracle, how deep
the unlearning goes compared with retraining (the Unlearning Depth Score, `probes.depth`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import GateThresholds, gate, resid, seed_all
from probes.depth import TAU, Positions, unlearning_depth_score
from probes.patch_engine import Cell, patch
from workbench.batching import encode
from workbench.capture import POINTS
from workbench.errors import LayerError
from workbench.facts import FactSet
from workbench.models import Subject


@dataclass(frozen=True)
class PatchingThresholds(GateThresholds):
    """Reading thresholds of activation patching (recoveries: 0 = M1's answer, 1 = M0's)."""

    # a patch "restores the answer" when it brings back this much of M0's log-prob gap
    recovered: float = 0.5
    # activations "unchanged" below this relative difference from M0's...
    same: float = 0.05
    # ...and "identical" below this one
    identical: float = 1e-4
    # nats: facts whose answer log-prob M1 barely moved are left out of the ratios
    min_gap: float = 0.5
    # UDS (depth of unlearning against the oracle's): as deep at or above, shallow at or below
    depth_removed: float = 0.7
    depth_shallow: float = 0.3
    # UDS: a block encodes a fact when the oracle's patch drops M0's answer by more (nats/token)
    ke_tau: float = TAU


def recovery(patched: np.ndarray, lp1: np.ndarray, lp0: np.ndarray,
             min_gap: float = PatchingThresholds.min_gap) -> tuple[np.ndarray, np.ndarray]:
    """Normalised recovery (0 = M1, 1 = M0) of `patched` [..., facts]: pooled over the facts
    whose gap exceeds `min_gap` (ratio of sums: stable when some gaps are small), and per fact."""
    gap = lp0 - lp1
    ok = gap > min_gap
    per_fact = np.where(ok, (patched - lp1) / np.where(ok, gap, 1.0), np.nan)
    pooled = ((patched - lp1) * ok).sum(-1) / max(float((gap * ok).sum()), 1e-9)
    return pooled, per_fact


def divergence(m0: Subject, m1: Subject, prompts: Sequence[str]) -> np.ndarray:
    """Per layer: mean relative difference |a1 - a0| / |a0| of `resid_post` at the last token."""
    layers = list(range(m0.n_layers))
    a0, a1 = resid(m0, prompts, layers), resid(m1, prompts, layers)
    return (np.linalg.norm(a1 - a0, axis=-1) / (np.linalg.norm(a0, axis=-1) + 1e-8)).mean(-1)


def _configs(n_layers: int, points: Sequence[str], window: int) -> list[tuple[str, tuple[Cell, ...]]]:
    out = [(f"{p}@{L}", ((L, p, 0),)) for p in points for L in range(n_layers)]
    for p in points:
        if p in ("mlp_out", "attn_out") and 1 < window <= n_layers:
            out += [(f"{p}@{s}-{s + window - 1}", tuple((L, p, 0) for L in range(s, s + window)))
                    for s in range(n_layers - window + 1)]
    return out


def _activation_patching(ctx: ProbeContext, th: PatchingThresholds,
                         points: Sequence[str] = ("resid_post", "mlp_out", "attn_out"),
                         window: int = 3, all_positions: bool = False, max_back: int = 6,
                         batch_size: int = 256, uds_positions: Positions = "answer") -> Finding:
    m0, m1, facts, oracle, progress = ctx.m0, ctx.m1, ctx.facts, ctx.oracle, ctx.progress
    min_gap = th.min_gap
    seed_all(ctx.seed)
    g = gate(m0, m1, facts, th, oracle=oracle)
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        raise LayerError(f"unknown hook point(s) {unknown}; expected some of {POINTS}")
    fs = facts.forget
    if g.blocker():
        return Finding("activation_patching", "inconclusive", g.blocker())
    prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
    n, nf = m1.n_layers, len(fs)
    configs = _configs(n, points, window)
    rows = [(f, cells) for _, cells in configs for f in range(nf)]
    if all_positions:
        last = encode(m1.tokenizer, prompts, device="cpu").last.tolist()
        pos_rows = [(f, ((L, "resid_post", k),)) for L in range(n) for k in range(max_back)
                    for f in range(nf) if k <= last[f]]
    run = patch(m1, m0, prompts, answers, rows, batch_size, progress=progress)
    lp1, lp0 = run.base, run.source
    main = run.logprobs[: len(configs) * nf].reshape(len(configs), nf)
    pooled, per_fact = recovery(main, lp1, lp0, min_gap)
    labels = [name for name, _ in configs]
    arrays: dict[str, np.ndarray] = {"lp_m0": lp0, "lp_m1": lp1}
    for p in points:
        sel = [i for i, name in enumerate(labels) if name.startswith(f"{p}@") and "-" not in name]
        arrays[f"recovery_{p}"] = pooled[sel]
        arrays[f"recovery_by_fact_{p}"] = per_fact[sel].T  # [facts, layers]
        win = [i for i, name in enumerate(labels) if name.startswith(f"{p}@") and "-" in name]
        if win:
            arrays[f"recovery_window{window}_{p}"] = pooled[win]
    if all_positions:
        grid = np.full((n, max_back), np.nan)
        # earlier positions need whole sequences (the full path); the main sweep need not
        extra = patch(m1, m0, prompts, answers, pos_rows, batch_size, progress=progress).logprobs
        for L in range(n):
            for k in range(max_back):
                idx = [i for i, (f, ((l2, _, k2),)) in enumerate(pos_rows) if l2 == L and k2 == k]
                fsel = [pos_rows[i][0] for i in idx]
                grid[L, k] = recovery(extra[idx], lp1[fsel], lp0[fsel], min_gap)[0] if idx else np.nan
        arrays["recovery_resid_post_by_back"] = grid  # [layer, tokens before the last]
    div = divergence(m0, m1, prompts)
    arrays["divergence_resid_post"] = div
    scores = {"gap_nats": float(np.mean(lp0 - lp1)), "max_divergence": float(div.max())}
    unavailable: dict[str, str] = {}
    depth = _uds(m0, m1, oracle, facts, th, uds_positions, batch_size, progress, scores, arrays,
                 unavailable)
    single = [(pooled[i], labels[i]) for i, name in enumerate(labels)
              if "-" not in name and not name.startswith("resid")]
    best, best_label = max(single) if single else (float("nan"), "")
    resid_rec = arrays.get("recovery_resid_post")
    scores.update({"best_single_recovery": float(best),
                   "max_window_recovery": float(max((pooled[i] for i, nm in enumerate(labels)
                                                     if "-" in nm), default=np.nan))})
    if resid_rec is not None:
        scores["max_resid_recovery_before_last"] = float(resid_rec[:-1].max()) if n > 1 else 0.0
    reading, reason = _read(th, div, best, best_label, resid_rec, depth, scores["gap_nats"])
    return Finding("activation_patching", reading, reason, scores, arrays,
                   meta={"method": run.method, "n_facts": nf, "points": list(points),
                         "window": window, "labels": labels, "seed": ctx.seed,
                         "uds_positions": uds_positions, "unavailable": unavailable})


def _uds(m0: Subject, m1: Subject, oracle: Subject | None, facts: FactSet,
         th: PatchingThresholds, positions: Positions, batch_size: int, progress: bool,
         scores: dict, arrays: dict, unavailable: dict) -> float:
    """Record UDS (`uds`, per-block `uds_*` arrays, per-fact `uds_*_by_fact`), or say why not."""
    if oracle is None:
        unavailable["uds"] = "no oracle: UDS patches a retain oracle's activations into M0"
        return float("nan")
    d = unlearning_depth_score(m0, m1, oracle, facts, th.ke_tau, positions, batch_size, progress)
    arrays.update({f"uds_{k}": v for k, v in d.by_layer().items()})
    arrays.update({"uds_by_fact": d.by_fact, "uds_s1_by_fact": d.s1, "uds_s2_by_fact": d.s2,
                   "uds_ke_by_fact": d.ke})
    scores["uds_facts"] = float(np.isfinite(d.by_fact).sum())
    if np.isnan(d.score):
        unavailable["uds"] = (f"no block encodes any forget fact (the oracle's patch never drops "
                              f"M0's answer by more than {th.ke_tau} nats per token)")
    else:
        scores["uds"] = d.score
    return d.score


PROBE = ProbeSpec("activation_patching", PatchingThresholds, _activation_patching)


def activation_patching(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                        points: Sequence[str] = ("resid_post", "mlp_out", "attn_out"),
                        window: int = 3, all_positions: bool = False, max_back: int = 6,
                        batch_size: int = 256, uds_positions: Positions = "answer",
                        seed: int = 0, progress: bool = False, device: str | None = None,
                        thresholds: PatchingThresholds | None = None) -> Finding:
    """Patch M0's activations into M1 on the forget facts (per layer, per window, per component)
    and read where M0's answer comes back; with an oracle, also how deep M1 erased it (UDS)."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds,
                 points=points, window=window, all_positions=all_positions, max_back=max_back,
                 batch_size=batch_size, uds_positions=uds_positions)


def _read(th: PatchingThresholds, div: np.ndarray, best: float, best_label: str,
          resid_rec: np.ndarray | None, depth: float, gap: float) -> tuple[str, str]:
    if div.max() < th.identical:
        return ("suppression-signature",
                f"M1's residual stream equals M0's at every layer on the forget prompts, yet the "
                f"answer lost {gap:.1f} nats: the edit acts after the last block (at the output)")
    if best_label:
        layer = int(best_label.split("@")[1])
        if best >= th.recovered and layer > 0 and div[:layer].max() < th.same:
            return ("suppression-signature",
                    f"patching M0's {best_label} alone restores {best:.0%} of the answer and M1 "
                    f"computes like M0 before block {layer}: a localised suppressor")
    if resid_rec is not None:
        hit = resid_rec >= th.recovered
        onset = int(np.argmax(hit)) if hit.any() else -1
        n = len(resid_rec)
        if onset >= n - max(1, n // 4) and onset > 0 and div[:onset].max() < th.same:
            return ("suppression-signature",
                    f"the residual restores the answer only from block {onset} of {n}, and M1 "
                    f"computes like M0 before it: the edit is confined to the last blocks")
    if not np.isnan(depth):
        if depth >= th.depth_removed:
            return ("removal-consistent",
                    f"M1 erased the facts as deep as the oracle (UDS {depth:.2f})")
        if depth <= th.depth_shallow:
            return ("suppression-signature",
                    f"M1's activations still carry most of what the oracle's lack (UDS {depth:.2f})")
    before_last = resid_rec[:-1].max() if resid_rec is not None and len(resid_rec) > 1 else 0.0
    if (np.isnan(best) or best < th.recovered) and before_last < th.recovered:
        return ("removal-consistent",
                f"no single activation restores the answer (best {best:.0%}; residual before "
                f"the last block at most {before_last:.0%})")
    return ("inconclusive",
            f"patching restores the answer ({best_label or 'residual'}: {max(best, before_last):.0%}) "
            "but M1 differs from M0 before that point; without an oracle this cannot be told "
            "from removal")

