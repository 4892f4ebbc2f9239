"""Parameter restoration: put M0's weights back into M1 one group at a time and measure recovery.

Groups are sliding windows of blocks, the last k blocks, the embeddings, the output head (final
norm + unembedding), and one module type across all blocks (attention, MLP, norms). Each group is
evaluated with `torch.func.functional_call` and a dict holding only that group's M0 tensors, so
no model is copied and M1 is never modified. An inference-time edit (extra hooks) is restored by
removing its interventions one at a time, on M0's weights when M1's are M0's and on M1's own when
they changed too (a quantized or fine-tuned model served behind a hook).

Putting back the weights an edit changed undoes that edit, whatever it did; so only *where* the
restoring weights sit is evidence. A small group late in the model (the last blocks, the output
head) acts after the facts were read out, and restoring it is the signature of a suppressor. So
does the input embedding, at the other end: an edit undone by restoring it only cut the way in
(the forget names' rows, say), and the facts stored in the blocks are intact. A
window where the facts are stored restores them after a true removal too: a retrain oracle
fine-tuned from the same base as M0 (the real-model world's) differs from M0 exactly there. Such
windows are reported, not read as suppression, and when the oracle shares M0's weight basis the
same scan on it is the floor that M1's recovery must exceed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import GateThresholds, gate, seed_all
from probes.patching import recovery
from probes.restore_blocks import PrefixScan
from workbench.batching import chunks, encode
from workbench.errors import IncompatibleSubjectsError
from workbench.facts import FactSet
from workbench.models import Subject, decoder_layers, final_norm
from workbench.scoring import answer_scores

Group = tuple[str, str, tuple[str, ...]]  # (label, kind, parameter names)


@dataclass(frozen=True)
class RestorationThresholds(GateThresholds):
    """Reading thresholds of parameter restoration (recoveries: 0 = M1's answer, 1 = M0's)."""

    # a restored group (or removed intervention) "restores the answer" from this recovery on
    recovered: float = 0.5
    # nats: facts whose answer log-prob M1 barely moved are left out of the ratios
    min_gap: float = 0.5
    # M1 is read as trained independently of M0 (not an edit of it) when most of its tensors
    # changed and the change's norm is at least this fraction of M0's weight norm
    independent_change: float = 0.5
    # a block window counts as localised when it spans at most this fraction of the depth
    local_depth: float = 1 / 3
    # with a floor (the oracle scanned the same way), a group must restore this much more of
    # the answer in M1 than in the oracle
    over_floor: float = 0.25


def _names_of(model: torch.nn.Module, modules: Sequence[torch.nn.Module]) -> tuple[str, ...]:
    ids = {id(p) for m in modules for p in m.parameters()}
    return tuple(n for n, p in model.named_parameters() if id(p) in ids)


def groups(model: torch.nn.Module, window_sizes: Sequence[int] = (1, 3),
           last_k: Sequence[int] = (1, 2, 4)) -> list[Group]:
    """The parameter groups restored one at a time (names as in `model.named_parameters()`)."""
    blocks = decoder_layers(model)
    n = len(blocks)
    out: list[Group] = []
    for w in sorted(set(window_sizes)):
        if 1 <= w <= n:
            out += [(f"blocks {s}-{s + w - 1}" if w > 1 else f"block {s}", f"window{w}",
                     _names_of(model, blocks[s:s + w])) for s in range(n - w + 1)]
    out += [(f"last {k} blocks", "last_k", _names_of(model, blocks[n - k:]))
            for k in sorted(set(last_k)) if 1 <= k <= n]
    emb = model.get_input_embeddings()
    out.append(("embeddings", "embed", _names_of(model, [emb])))
    head = [m for m in (final_norm(model), model.get_output_embeddings()) if m is not None]
    out.append(("output head (final norm + unembedding)", "head", _names_of(model, head)))
    kinds = {"attention": [], "mlp": [], "norms": []}
    for blk in blocks:
        for name, mod in blk.named_children():
            low = name.lower()
            key = ("attention" if "attn" in low or "attention" in low else
                   "mlp" if "mlp" in low or "feed_forward" in low else
                   "norms" if "norm" in low or "ln" in low else None)
            if key:
                kinds[key].append(mod)
    out += [(f"all {k}", "type", _names_of(model, mods)) for k, mods in kinds.items() if mods]
    return [g for g in out if g[2]]


@torch.no_grad()
def _logprobs(model: torch.nn.Module, tokenizer, prompts, answers, params: dict | None,
              batch_size: int, device) -> np.ndarray:
    return torch.cat([answer_scores(model, encode(tokenizer, prompts[sl], answers[sl],
                                                  device=device), params).total.cpu()
                      for sl in chunks(len(prompts), batch_size)]).numpy()


@dataclass(frozen=True)
class Scan:
    """Recovery per restored group (or removed intervention), with what was compared."""

    labels: list[str]
    kinds: list[str]
    recovery: np.ndarray  # [groups]
    per_fact: np.ndarray  # [facts, groups]
    param_fraction: np.ndarray  # [groups]
    lp0: np.ndarray
    lp1: np.ndarray
    changed: set[str]
    added: list
    total: int


def restoration_scan(m0: Subject, m1: Subject, prompts: Sequence[str], answers: Sequence[str],
                     window_sizes: Sequence[int] = (1, 3), last_k: Sequence[int] = (1, 2, 4),
                     batch_size: int = 64, min_gap: float = RestorationThresholds.min_gap,
                     progress: bool = False) -> Scan:
    """Restore each group of M0's weights into M1 (functional_call, M1 untouched) and measure
    the normalised recovery of the answers; and remove each of M1's interventions in turn."""
    # every name of every tensor on both sides, so an edit that untied a tied output head
    # (its own `lm_head.weight` now) still finds M0's (the embedding, under that name too)
    p0 = dict(m0.model.named_parameters(remove_duplicate=False))
    every1 = dict(m1.model.named_parameters(remove_duplicate=False))
    if p0.keys() != every1.keys() or any(p0[k].shape != every1[k].shape for k in p0):
        raise IncompatibleSubjectsError(
            f"{m0.name!r} and {m1.name!r} have different parameter names or shapes")
    p1 = dict(m1.model.named_parameters())  # M1's own tensors, once each (the groups' names)
    dev = m1.device
    lp0 = _logprobs(m0.model, m0.tokenizer, prompts, answers, None, batch_size, m0.device)
    lp1 = _logprobs(m1.model, m1.tokenizer, prompts, answers, None, batch_size, dev)
    changed = {k for k in p1 if not torch.equal(p0[k], p1[k].to(p0[k].device))}
    added = _added_interventions(m0, m1)
    labels, kinds, recs, sizes = [], [], [], []
    per_fact: list[np.ndarray] = []
    total = sum(p.numel() for p in p1.values())
    todo = groups(m1.model, window_sizes, last_k) if changed else []
    runner = PrefixScan(m1.model, m1.tokenizer, prompts, answers, batch_size, dev) if todo else None
    for label, kind, names in tqdm(todo, desc="restore", disable=not progress):
        if changed.isdisjoint(names):  # nothing to restore here: M1 as is, by construction
            lp = lp1
        else:
            lp = runner.logprobs({n: p0[n].to(dev) for n in names}).numpy()
        pooled, pf = recovery(lp, lp1, lp0, min_gap)
        labels.append(label), kinds.append(kind), recs.append(float(pooled))
        sizes.append(sum(p1[n].numel() for n in names) / total), per_fact.append(pf)
    if added:
        # each of M1's own hooks taken off in turn: on M0's weights when M1's are M0's, else on
        # M1's own weights (M0's hooks, if any, put back)
        bare, keep = (m1.without_interventions(), tuple(m0.interventions)) if changed else (m0, ())
        for i, iv in enumerate(added):
            rest = [x for j, x in enumerate(added) if j != i]
            s = bare.with_interventions(*keep, *rest) if keep or rest else bare
            lp = _logprobs(s.model, s.tokenizer, prompts, answers, None, batch_size, s.device)
            pooled, pf = recovery(lp, lp1, lp0, min_gap)
            labels.append(f"remove intervention {iv.name}"), kinds.append("intervention")
            recs.append(float(pooled)), sizes.append(0.0), per_fact.append(pf)
    return Scan(labels, kinds, np.array(recs), np.stack(per_fact, 1) if per_fact else
                np.zeros((len(prompts), 0)), np.array(sizes), lp0, lp1, changed, added, total)


def _parameter_restoration(ctx: ProbeContext, th: RestorationThresholds,
                           window_sizes: Sequence[int] = (1, 3), last_k: Sequence[int] = (1, 2, 4),
                           batch_size: int = 64) -> Finding:
    m0, m1, facts = ctx.m0, ctx.m1, ctx.facts
    seed_all(ctx.seed)
    g = gate(m0, m1, facts, th, oracle=ctx.oracle)
    if g.blocker():
        return Finding("parameter_restoration", "inconclusive", g.blocker())
    drift = weight_drift(m0, m1)
    if _independent(drift, th):
        return Finding("parameter_restoration", "inconclusive",
                       f"M1 is not an edit of M0: {drift['tensor_fraction']:.0%} of its tensors "
                       f"differ, by {drift['relative_change']:.0%} of M0's weight norm (trained "
                       "independently, like a retrain oracle: its weights live in another basis, "
                       "so restoring M0's means nothing)", drift)
    fs = facts.forget
    prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
    scan = restoration_scan(m0, m1, prompts, answers, window_sizes, last_k, batch_size,
                            th.min_gap, ctx.progress)
    floor = None  # the oracle restored the same way, when it is an edit of M0's weights too
    if ctx.oracle is not None and scan.changed:
        fscan = None
        if same_model(m1, ctx.oracle):  # the oracle audited as an edit: its scan is M1's
            fscan = scan
        elif not _independent(weight_drift(m0, ctx.oracle), th):
            fscan = restoration_scan(m0, ctx.oracle, prompts, answers, window_sizes, last_k,
                                     batch_size, th.min_gap, ctx.progress)
        if fscan is not None:
            by_label = dict(zip(fscan.labels, fscan.recovery, strict=True))
            floor = np.array([by_label.get(lb, 0.0) for lb in scan.labels])
    labels, kinds, recs, changed, added = (scan.labels, scan.kinds, scan.recovery, scan.changed,
                                           scan.added)
    lp0, lp1, total = scan.lp0, scan.lp1, scan.total
    p1 = dict(m1.model.named_parameters())
    arrays = {"recovery": recs, "param_fraction": scan.param_fraction, "lp_m0": lp0,
              "lp_m1": lp1}
    if len(labels):
        arrays["recovery_by_fact"] = scan.per_fact  # [facts, groups]
    if floor is not None:
        arrays["recovery_floor"] = floor
    reading, reason, scores = _read(th, labels, kinds, recs, m1.n_layers, bool(changed), added,
                                    floor)
    scores.update({"changed_param_fraction":
                   sum(p1[k].numel() for k in changed) / total if total else 0.0,
                   "gap_nats": float(np.mean(lp0 - lp1)), **drift})
    return Finding("parameter_restoration", reading, reason, scores, arrays,
                   meta={"labels": labels, "kinds": kinds, "n_facts": len(fs),
                         "weights_identical": not changed,
                         "floor": "oracle" if floor is not None else "none",
                         "interventions": [iv.name for iv in added], "seed": ctx.seed})


PROBE = ProbeSpec("parameter_restoration", RestorationThresholds, _parameter_restoration)


def parameter_restoration(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                          window_sizes: Sequence[int] = (1, 3), last_k: Sequence[int] = (1, 2, 4),
                          batch_size: int = 64, seed: int = 0, progress: bool = False,
                          device: str | None = None,
                          thresholds: RestorationThresholds | None = None) -> Finding:
    """Restore M0's weights into M1 group by group (or remove M1's interventions one by one)
    and read whether a small, late part of the model holds the forgetting."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds,
                 window_sizes=window_sizes, last_k=last_k, batch_size=batch_size)


def _added_interventions(m0: Subject, m1: Subject) -> list:
    base = tuple(m0.interventions)
    ivs = tuple(m1.interventions)
    return list(ivs[len(base):]) if ivs[:len(base)] == base else list(ivs)


@torch.no_grad()
def same_model(a: Subject, b: Subject) -> bool:
    """Whether `a` and `b` surely compute the same function: equal weights and the very same
    intervention objects (interventions may hold tensors, so they are compared by identity)."""
    if len(a.interventions) != len(b.interventions) or any(
            x is not y for x, y in zip(a.interventions, b.interventions, strict=True)):
        return False
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    return pa.keys() == pb.keys() and all(
        pa[k] is pb[k] or (pa[k].shape == pb[k].shape
                           and torch.equal(pa[k], pb[k].to(pa[k].device))) for k in pa)


@torch.no_grad()
def weight_drift(m0: Subject, m1: Subject) -> dict[str, float]:
    """How far M1's weights are from M0's: the share of tensors that differ, and the norm of the
    difference relative to M0's weight norm (both over all parameters)."""
    p0 = dict(m0.model.named_parameters())
    p1 = dict(m1.model.named_parameters(remove_duplicate=False))  # a tied side has both names
    diff = norm0 = 0.0
    n_changed = 0
    for k, a in p0.items():
        b = p1[k].to(a.device)
        norm0 += _square_sum(a)
        if b is not a and not torch.equal(a, b):
            n_changed += 1
            diff += _square_sum(b, a)
    return {"tensor_fraction": n_changed / max(1, len(p0)),
            "relative_change": (diff / norm0) ** 0.5 if norm0 else 0.0}


def _square_sum(a: torch.Tensor, minus: torch.Tensor | None = None,
                chunk: int = 1 << 22) -> float:
    """Sum of squares of `a` (or of `a - minus`) in float64, a few million values at a time
    (a whole embedding matrix in float64 would hold twice its float32 size, twice over)."""
    a = a.reshape(-1)
    m = None if minus is None else minus.reshape(-1)
    total = 0.0
    for s in range(0, a.numel(), chunk):
        x = a[s:s + chunk].double()  # the weights themselves when they are float64: no `-=`
        if m is not None:
            x = x - m[s:s + chunk].double()
        total += float(x.square().sum())
    return total


def _independent(drift: dict[str, float], th: RestorationThresholds) -> bool:
    """Whether a model with this `weight_drift` from M0 was trained apart from it (most tensors
    differ, by a large share of M0's norm) rather than edited from it."""
    return drift["tensor_fraction"] > 0.5 and drift["relative_change"] >= th.independent_change


def _span(n: int, n_layers: int, th: RestorationThresholds) -> bool:
    """`n` blocks are a local part of the model: at most 3, and at most `local_depth` of it."""
    return n <= min(3, max(1, int(th.local_depth * n_layers)))


def _small_late(label: str, kind: str, n_layers: int, th: RestorationThresholds) -> bool:
    """Outside where the facts are stored: a local window in the last third, the last few
    blocks, the head, or (before the blocks) the input embedding."""
    if kind in ("head", "embed"):
        return True
    if kind == "last_k":
        return _span(int(label.split()[1]), n_layers, th)
    if kind.startswith("window") and _span(int(kind[6:]), n_layers, th):
        first = int(label.split()[1].split("-")[0])
        return first >= n_layers - max(1, n_layers // 3)
    return False


def _read(th: RestorationThresholds, labels, kinds, recs: np.ndarray, n_layers: int,
          changed: bool, added: list, floor: np.ndarray | None = None
          ) -> tuple[str, str, dict[str, float]]:
    scores = {"max_recovery": float(recs.max()) if len(recs) else 0.0}
    iv = [i for i, k in enumerate(kinds) if k == "intervention"]
    best = max(iv, key=lambda i: recs[i]) if iv else None
    if best is not None:
        scores["best_intervention_recovery"] = float(recs[best])
        if recs[best] >= th.recovered:
            on = "M1's weights are M0's; " if not changed else ""
            mine = "" if not changed else " on M1's own weights"
            return ("suppression-signature",
                    f"{on}{labels[best]} restores {recs[best]:.0%} of the answer{mine}: the "
                    "forgetting is an inference-time hook", scores)
    if not changed:
        if best is None:
            return "inconclusive", "M1's weights and hooks are M0's: nothing to restore", scores
        return ("inconclusive", "M1's weights are M0's and removing no single intervention "
                f"restores the answer (best {recs[best]:.0%})", scores)
    small = [i for i, (lb, k) in enumerate(zip(labels, kinds, strict=True))
             if _small_late(lb, k, n_layers, th)]
    local = [i for i, k in enumerate(kinds)
             if k.startswith("window") and _span(int(k[6:]), n_layers, th) and i not in small]
    over = recs - floor if floor is not None else recs
    best_small = max(small, key=lambda i: over[i]) if small else None
    best_local = max(local, key=lambda i: recs[i]) if local else None
    scores["best_small_late_recovery"] = float(recs[best_small]) if small else 0.0
    scores["best_local_recovery"] = float(recs[best_local]) if local else 0.0
    if floor is not None:
        scores["best_small_late_over_floor"] = float(over[best_small]) if small else 0.0
    if best_small is not None and recs[best_small] >= th.recovered and \
            (floor is None or over[best_small] >= th.over_floor):
        vs = f" ({floor[best_small]:.0%} in the oracle)" if floor is not None else ""
        where = ("before the facts are read: the way in was cut" if kinds[best_small] == "embed"
                 else "after the facts are read out")
        return ("suppression-signature",
                f"restoring M0's {labels[best_small]} brings back {recs[best_small]:.0%} of the "
                f"answer{vs}: a suppressor {where}", scores)
    where = ""
    if best_local is not None and recs[best_local] >= th.recovered:
        vs = f", {floor[best_local]:.0%} in the oracle" if floor is not None else ""
        where = (f"; restoring M0's {labels[best_local]} brings back {recs[best_local]:.0%}"
                 f"{vs}: where the edit changed the weights, which restores the facts after a "
                 "removal as well, so no evidence either way")
    return ("removal-consistent",
            f"no group outside the blocks that store facts (last blocks, output head, input "
            f"embedding) restores the answer (best "
            f"{scores['best_small_late_recovery']:.0%}){where}", scores)
