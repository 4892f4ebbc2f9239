"""`rmu`: Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark").

The MLPs of a few early-middle blocks are trained so that the residual stream after block `layer`
maps forget tokens to `c * u` (u: a fixed random unit vector from the seed) while retain tokens
keep the frozen original's activations: loss = MSE(forget, c u) + alpha * MSE(retain, original).
The original's retain activations are computed once up front, so no second model copy is kept.

Paper settings (Zephyr-7B): update layer 7 of 32, train layers 5-7, c = 6.5, alpha = 1200,
lr 5e-5, batch 4, 150 batches. Their c is absolute for Zephyr's activation scale; here `coef` is
in units of the original's mean residual norm on the forget tokens (so one default fits different
models), and both MSEs are divided by that norm squared over d_model, so `alpha` is scale-free.
`adaptive=true` (Dang et al. 2025, "adaptive RMU"): each token's target norm is `coef` times that
token's own original activation norm instead of a single constant.

Departures, chosen on SmolLM2's built-in facts (a few dozen forget facts rather than a corpus):
the forget loss covers only the tokens where the model holds the entity after `layer`
(`positions=auto`, from `workbench.recall_site`), not every token; 480 steps with a cosine decay
to lr/10 rather than a constant rate (the retain term keeps repairing other facts long after the
forget facts are gone, so holdout keeps rising with more steps on every seed, and on the toy model
forget keeps falling; figures: `bench/operators.py --operators rmu --seed S --set steps=N` writes
`bench/results/operators.json`); and counterfactual anchors held like retain.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.batching import Batch, encode
from workbench.edits import Edit
from workbench.errors import LayerError, WorkbenchError
from workbench.facts import Fact, FactSet, phrasings, unnamed
from workbench.models import Subject, decoder_layers, hidden_of
from workbench.operators.anchors import neighbour_words, swap_anchors
from workbench.operators.base import Operator, OperatorConfig, register_operator
from workbench.operators.entity_rows import EntityRows, RowsMode, rows_wanted
from workbench.operators.projection import projected_step
from workbench.options import option
from workbench.progress import report
from workbench.recall_site import swap_pairs, swap_rates

MAX_SITE_PAIRS = 256  # fact pairs patched to find the recall site (positions=auto)


Positions = Literal["auto", "answer", "all", "entity", "entity+answer"]
LRSchedule = Literal["constant", "cosine"]
RMU_POSITIONS = get_args(Positions)


@dataclass(frozen=True)
class RMUConfig(OperatorConfig):
    """`layer=None`: the block at a quarter of the depth (7 of 30 on SmolLM2, as 7 of 32 in the
    paper); `layers=None`: that block and the two before it (the paper's 5, 6, 7).

    `positions=auto`: answer when a forget prompt does not name its entity, else where the model
    holds the entity after `layer` (`workbench.recall_site`): entity when patching the entity
    token swaps answers at least as often as patching the last token (SmolLM2), entity+answer
    when the entity was already copied to the last token (toy model). Anchors
    (`workbench.operators.anchors`) are entity, relation and neighbour swaps of each forget
    prompt, held to the original like retain, so the shortcuts that would also hit unshown facts
    are ruled out (on SmolLM2's built-in facts holdout falls far lower without anchors than with
    these defaults: `bench/operators.py --models smollm2 --operators rmu --set anchors=0` against
    the default run, in `bench/results/operators.json`)."""

    layer: int | None = option(None, "block whose output is misdirected (None: a quarter of "
                                     "the depth)")
    layers: tuple[int, ...] | None = option(None, "blocks whose MLPs train, none after `layer` "
                                                  "(None: `layer` and the two before it)")
    coef: float = option(4.0, "target norm c, in units of the mean original forget norm", gt=0)
    adaptive: bool = option(False, "adaptive RMU: per-token target norm coef * |h_orig(x)|")
    alpha: float = option(300.0, "weight of the retain MSE", ge=0)
    lr: float = option(2e-3, "AdamW learning rate", gt=0)
    lr_schedule: LRSchedule = option("cosine", "constant (the paper) or cosine (decays to lr/10 "
                                               "at the end)")
    steps: int = option(480, "optimiser steps", ge=1)
    batch_size: int = option(8, "forget rows per step", ge=1)
    held_batch_size: int = option(8, "rows per step of the retain prompts and of the anchors",
                                  ge=1)
    positions: Positions = option("auto", "tokens the forget loss covers: the entity's, "
                                          "entity+answer, answer (last prompt + answer tokens), "
                                          "all, or auto (from the recall site)")
    use_paraphrases: bool = option(True, "train on every phrasing of each fact")
    rows: RowsMode = option("auto", "also misdirect through the forget entities' own embedding "
                                    "rows (`workbench.operators.entity_rows`)")
    rows_lr: float = option(1e-2, "learning rate of those embedding rows", gt=0)
    anchors: int = option(4, "counterfactual anchors of each kind per forget prompt, held like "
                             "retain (0: none)", ge=0)
    neighbours: int = option(8, "vocabulary words nearest each forget entity that neighbour "
                                "swaps draw from (0: no neighbour swaps)", ge=0)


class _Stop(Exception):
    pass


def residual_after(model: torch.nn.Module, block: int, b: Batch) -> Tensor:
    """The residual stream after `block` (the forward pass stops there)."""
    out: dict[str, Tensor] = {}

    def hook(_mod, _args, output):
        out["h"] = hidden_of(output)
        raise _Stop

    handle = decoder_layers(model)[block].register_forward_hook(hook)
    try:
        model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return out["h"]


def token_mask(b: Batch, positions: str) -> Tensor:
    """Which positions the forget loss covers (`entity` needs `b.focus`, the entity tokens)."""
    if positions == "all":
        return b.attention_mask.bool()
    if positions == "answer":
        return b.answer_mask
    if positions in ("entity", "entity+answer") and b.focus is not None:
        return b.focus | b.answer_mask if positions == "entity+answer" else b.focus
    raise WorkbenchError(f"unknown positions {positions!r}; expected one of {RMU_POSITIONS}")


def _encode(subject: Subject, rows: list[tuple[Fact, str]], entity: bool) -> Batch:
    if entity and (missing := unnamed(rows)):
        raise WorkbenchError(f"rmu positions=entity: {len(missing)} prompt(s) do not contain "
                             f"their fact's entity (e.g. {missing[0]!r})")
    return encode(subject.tokenizer, [p for _, p in rows], [f.answer for f, _ in rows],
                  device=subject.device, spans=[f.entity for f, _ in rows] if entity else None)


def held_drift(model: torch.nn.Module, layer: int, batches: list[Batch], refs: list[Tensor],
               rng: random.Random, batch_size: int) -> Tensor:
    """Mean squared difference from the original's activations after `layer`, over every real
    token of `batch_size` random rows of each held batch."""
    total, count = 0.0, 0
    for b, ref in zip(batches, refs, strict=True):
        n = b.input_ids.shape[0]
        idx = torch.tensor(rng.sample(range(n), min(batch_size, n)), device=ref.device)
        h = residual_after(model, layer, b.rows(idx))
        mask = b.attention_mask[idx, : h.shape[1]].bool()
        total = total + ((h - ref[idx, : h.shape[1]]) ** 2)[mask].sum()
        count += int(mask.sum()) * h.shape[-1]
    return total / count


def resolve_layers(subject: Subject, config: RMUConfig) -> tuple[int, tuple[int, ...]]:
    n = subject.n_layers
    layer = config.layer if config.layer is not None else max(0, n // 4)
    layers = tuple(config.layers) if config.layers else tuple(range(max(0, layer - 2), layer + 1))
    bad = [L for L in (layer, *layers) if not 0 <= L < n]
    if bad:
        raise LayerError(f"rmu: layer(s) {bad} out of range: {subject.name} has layers 0..{n - 1}")
    if max(layers) > layer:
        raise LayerError(f"rmu: trained layers {list(layers)} must not come after the update "
                         f"layer {layer} (they could not change its activations)")
    return layer, tuple(sorted(set(layers)))


def lr_factor(schedule: str, steps: int):
    """The learning-rate multiplier at each step: 1 (constant) or a cosine from 1 to 0.1."""
    if schedule == "constant":
        return lambda _step: 1.0
    if schedule == "cosine":
        return lambda step: 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, steps) / steps))
    raise WorkbenchError(f"unknown lr_schedule {schedule!r}; expected constant or cosine")


def _misdirect(model: torch.nn.Module, layer: int, forget: tuple[Batch, Tensor, Tensor],
               held: tuple[list[Batch], list[Tensor]], norm2: float, opt: torch.optim.Optimizer,
               rows: EntityRows | None, config: RMUConfig, progress: bool) -> dict[str, float]:
    """The RMU loop: forget (batch, loss mask, targets) pushed to the targets, `held` batches kept
    at their reference activations; returns the last step's losses."""
    fb, fmask, target_f = forget
    rng = random.Random(config.seed)
    nf, bs = fb.input_ids.shape[0], config.batch_size
    stats: dict[str, float] = {}
    bar = tqdm(range(config.steps), desc="rmu", disable=None if progress else True, leave=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(config.lr_schedule, config.steps))
    for step in bar:
        fi = torch.tensor(rng.sample(range(nf), min(bs, nf)), device=fb.input_ids.device)
        hf = residual_after(model, layer, fb.rows(fi))
        loss_f = ((hf - target_f[fi, : hf.shape[1]]) ** 2)[fmask[fi, : hf.shape[1]]].mean() / norm2
        loss_r = held_drift(model, layer, *held, rng, config.held_batch_size) / norm2
        loss = loss_f + config.alpha * loss_r
        opt.zero_grad(set_to_none=True)
        loss.backward()
        projected_step(opt, {}, rows)
        sched.step()
        stats = {"loss": loss.item(), "forget_mse": loss_f.item(), "retain_mse": loss_r.item()}
        bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items()})
        report("train", step + 1, config.steps, operator="rmu", **stats)
    return stats


def auto_positions(subject: Subject, forget: FactSet, retain: FactSet, layer: int,
                   f_rows: list[tuple[Fact, str]]) -> tuple[str, dict[str, float]]:
    """`positions=auto`: the positions and the swap rates after `layer` they were chosen by."""
    if unnamed(f_rows):
        return "answer", {}
    pairs = swap_pairs([*forget, *retain])[:MAX_SITE_PAIRS]
    rates = swap_rates(subject, pairs, [layer]).get(layer, {})
    held_late = bool(rates) and rates["last"] > rates["entity"]
    return ("entity+answer" if held_late else "entity"), rates


def rmu_edit(subject: Subject, forget: FactSet, retain: FactSet, config: RMUConfig,
             progress: bool = True) -> tuple[Subject, dict[str, float]]:
    """Train a clone of `subject` with RMU; returns it and a few training statistics."""
    forget.require_nonempty("forget set")
    retain.require_nonempty("retain set")
    layer, layers = resolve_layers(subject, config)
    edited = subject.clone(source=f"{subject.source}+rmu")
    model, dev = edited.model, edited.device
    f_rows = phrasings(forget, config.use_paraphrases)
    positions, site = config.positions, {}
    if positions == "auto":
        positions, site = auto_positions(subject, forget, retain, layer, f_rows)
    fb = _encode(subject, f_rows, positions.startswith("entity"))
    rb = _encode(subject, phrasings(retain, config.use_paraphrases), False)
    # retain (and the anchors) are held at every token: unconstrained positions drift and break
    # everything
    held = [rb]
    near = None
    if config.neighbours > 0:
        ents = sorted({f.entity for f in forget if f.entity})
        near = neighbour_words(subject.tokenizer, subject.model.get_input_embeddings().weight.detach(),
                               ents, config.neighbours, set(ents))
    if config.anchors > 0 and (extra := swap_anchors(forget, retain, config.anchors, config.seed,
                                                     config.use_paraphrases, near)):
        held.append(encode(subject.tokenizer, extra, device=dev))
    fmask = token_mask(fb, positions)
    with torch.no_grad():  # the frozen original's activations, once
        f0 = residual_after(subject.model, layer, fb)
        held0 = [residual_after(subject.model, layer, b) for b in held]
    scale = float(f0.norm(dim=-1)[fmask].mean())
    d = f0.shape[-1]
    gen = torch.Generator().manual_seed(config.seed)
    u = torch.rand(d, generator=gen)  # as in the paper: uniform [0, 1), then normalised
    u = (u / u.norm()).to(dev, f0.dtype)
    if config.adaptive:
        target_f = config.coef * f0.norm(dim=-1, keepdim=True) * u
    else:
        target_f = (config.coef * scale * u).expand_as(f0)
    norm2 = scale**2 / d

    model.requires_grad_(False)
    blocks = decoder_layers(model)
    params = [p for L in layers for p in blocks[L].mlp.parameters()]
    for p in params:
        p.requires_grad_(True)
    groups = [{"params": params, "lr": config.lr}]
    rows = None
    if rows_wanted(forget, retain, config.rows, positions.startswith("entity"), model):
        rows = EntityRows.for_facts(model, subject.tokenizer, forget, [rb], preserve=0.1)
        groups.append({"params": [rows.delta], "lr": config.rows_lr})
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.0)
    with rows.attached(model, lambda: None) if rows is not None else nullcontext():
        stats = _misdirect(model, layer, (fb, fmask, target_f), (held, held0), norm2, opt, rows,
                           config, progress)
    if rows is not None:
        rows.merge(model)
    model.requires_grad_(False)
    model.eval()
    return edited, stats | {"layer": layer, "positions": positions,
                            "target_norm": config.coef * scale,
                            "entity_rows": 0 if rows is None else len(rows.ids),
                            "anchors": 0 if len(held) == 1 else held[1].input_ids.shape[0],
                            **{f"swap_rate_{k}": round(v, 4) for k, v in site.items()}}


@register_operator
class RMUOperator(Operator):
    name = "rmu"
    family = "suppression-intended"
    kind = "weights"
    touches = ("MLP weights of a few early-middle blocks (forget activations misdirected) and, "
               "for entity-level forget sets, the forget entities' embedding rows")
    config_cls = RMUConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: RMUConfig) -> Edit:
        t0 = time.perf_counter()
        edited, stats = rmu_edit(subject, forget, retain, config)
        edit = self.make_edit(subject, edited, config, t0)
        edit.metrics["training"] = stats
        return edit
