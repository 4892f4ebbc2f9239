"""`prune`: zero the MLP neurons most specific to the forget facts (Pochinkov & Schoots 2024-style
selective pruning).

A neuron is one input of `down_proj` (`act_fn(gate_proj x) * up_proj x` in Llama-style MLPs).
Its importance on a set of prompts is the mean |activation| over the prompts' real tokens; the
score is `score=ratio` (forget importance / (retain importance + eps), which favours neurons that
are nearly silent on retain) or `score=diff` (forget minus retain importance, which favours
strongly firing ones). The top `fraction` of neurons of each chosen block is removed by zeroing
its `down_proj` column. Deterministic: no randomness, ties broken by index.

The same selectivity applied to the embedding (`rows=auto`, entity-level forget sets only): the
rows of tokens inside the forget entities' names that no retain prompt uses are units that only
the forget prompts read (infinite forget/retain ratio), so they are zeroed too. This matters for
models that move an entity's identity to the last token in their first block and recall there
with shared MLP neurons (the toy model, `bench/recall_site.py`): no MLP neuron is selective there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from workbench.batching import chunks, encode
from workbench.edits import Edit
from workbench.errors import LayerError, WorkbenchError
from workbench.facts import FactSet, phrasings
from workbench.models import Subject, decoder_layers
from workbench.operators.base import Operator, OperatorConfig, register_operator
from workbench.operators.entity_rows import (
    RowsMode,
    entity_token_ids,
    rows_wanted,
    token_frequencies,
)
from workbench.operators.training import entity_positions
from workbench.options import option

Score = Literal["ratio", "diff"]
SCORES = get_args(Score)


@dataclass(frozen=True)
class PruneConfig(OperatorConfig):
    """Which neurons of which blocks to zero, scored on forget against retain prompts."""

    fraction: float = option(0.02, "share of each chosen block's neurons to zero", ge=0, le=1)
    layers: tuple[int, ...] | None = option(None, "blocks to prune (None: every block)")
    score: Score = option("ratio", "neuron score: forget / retain importance (ratio) or forget "
                                   "minus retain importance (diff)")
    eps: float = option(1e-3, "ratio: added to the retain importance, relative to its mean",
                        ge=0)
    use_paraphrases: bool = option(True, "score on every phrasing of each fact")
    batch_size: int = option(32, "prompts per forward pass", ge=1)
    rows: RowsMode = option("auto", "also zero the forget entities' embedding rows that no "
                                    "retain prompt uses (auto: for entity-level forget sets)")


def _down_proj(block: torch.nn.Module) -> torch.nn.Linear:
    mlp = getattr(block, "mlp", None)
    proj = getattr(mlp, "down_proj", None) if mlp is not None else None
    if not isinstance(proj, torch.nn.Linear):
        raise WorkbenchError(f"prune needs a Llama-style MLP with `down_proj`; "
                             f"{type(block).__name__} has none")
    return proj


@torch.no_grad()
def neuron_importance(subject: Subject, prompts: Sequence[str], layers: Sequence[int],
                      batch_size: int = 32) -> dict[int, Tensor]:
    """Mean |down_proj input| per neuron over the real tokens of `prompts`, per layer."""
    blocks = decoder_layers(subject.model)
    sums = {L: torch.zeros(_down_proj(blocks[L]).in_features, device=subject.device,
                           dtype=torch.float64) for L in layers}
    count = 0
    state: dict[str, Tensor] = {}
    handles = []
    for L in layers:
        def hook(_mod, args, L=L):
            a = args[0].abs().double() * state["mask"][..., None]
            sums[L] += a.sum((0, 1))

        handles.append(_down_proj(blocks[L]).register_forward_pre_hook(hook))
    try:
        for sl in chunks(len(prompts), batch_size):
            b = encode(subject.tokenizer, prompts[sl], device=subject.device)
            state["mask"] = b.attention_mask.double()
            count += int(b.attention_mask.sum())
            subject.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                          use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {L: (s / count).float() for L, s in sums.items()}


def select_neurons(forget_imp: Tensor, retain_imp: Tensor, fraction: float, score: str,
                   eps: float) -> Tensor:
    """Indices of the top `fraction` neurons by score (stable order: ties by index)."""
    if score == "ratio":
        s = forget_imp / (retain_imp + eps * retain_imp.mean())
    elif score == "diff":
        s = forget_imp - retain_imp
    else:
        raise WorkbenchError(f"unknown prune score {score!r}; expected one of {SCORES}")
    k = int(round(fraction * len(s)))
    order = torch.sort(s, descending=True, stable=True).indices
    return order[:k]


def _prompts(facts: FactSet, paraphrases: bool) -> list[str]:
    return [p for _, p in phrasings(facts, paraphrases)]


def exclusive_rows(subject: Subject, forget: FactSet, retain: FactSet, mode: str) -> list[int]:
    """Token ids inside the forget entities' names that no retain prompt uses ([] when `mode`
    rules rows out)."""
    if not rows_wanted(forget, retain, mode, entity_positions(forget, "auto"), subject.model):
        return []
    ids = entity_token_ids(subject.tokenizer, forget)
    used = encode(subject.tokenizer, _prompts(retain, True), device="cpu")
    vocab = subject.model.get_input_embeddings().weight.shape[0]
    return ids[token_frequencies([used], vocab)[ids] == 0].tolist()


def prune_edit(subject: Subject, forget: FactSet, retain: FactSet,
               config: PruneConfig) -> tuple[Subject, dict[int | str, list[int]]]:
    """A clone of `subject` with the chosen neurons' down_proj columns zeroed (and, per
    `config.rows`, the forget entities' own embedding rows; key "embed" of the result)."""
    forget.require_nonempty("forget set")
    retain.require_nonempty("retain set")
    n = subject.n_layers
    layers = sorted(set(config.layers)) if config.layers else list(range(n))
    bad = [L for L in layers if not 0 <= L < n]
    if bad:
        raise LayerError(f"prune: layer(s) {bad} out of range: {subject.name} has layers "
                         f"0..{n - 1}")
    fi = neuron_importance(subject, _prompts(forget, config.use_paraphrases), layers,
                           config.batch_size)
    ri = neuron_importance(subject, _prompts(retain, config.use_paraphrases), layers,
                           config.batch_size)
    edited = subject.clone(source=f"{subject.source}+prune")
    blocks = decoder_layers(edited.model)
    pruned: dict[int | str, list[int]] = {}
    with torch.no_grad():
        for L in layers:
            idx = select_neurons(fi[L], ri[L], config.fraction, config.score, config.eps)
            _down_proj(blocks[L]).weight[:, idx] = 0.0
            pruned[L] = sorted(idx.tolist())
        rows = exclusive_rows(subject, forget, retain, config.rows)
        if rows:
            edited.model.get_input_embeddings().weight[rows] = 0.0
            pruned["embed"] = rows
    return edited, pruned


@register_operator
class PruneOperator(Operator):
    name = "prune"
    family = "suppression-intended"
    kind = "weights"
    touches = ("MLP down_proj columns of the most forget-specific neurons and, for entity-level "
               "forget sets, the forget entities' own embedding rows (zeroed)")
    config_cls = PruneConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: PruneConfig) -> Edit:
        t0 = time.perf_counter()
        edited, pruned = prune_edit(subject, forget, retain, config)
        edit = self.make_edit(subject, edited, config, t0)
        edit.metrics["pruned"] = {str(L): len(ix) for L, ix in pruned.items()}
        return edit
