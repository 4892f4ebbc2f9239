"""Train the embedding rows of the forgotten entities' own tokens next to the chosen blocks.

Why: a model can move an entity's identity from its name to the last prompt token in its first
block and look the facts up there, with weights that every entity shares. The toy model does
this: after block 0, patching the last token transfers the answer more often than patching the
name (`bench/recall_site.py --model toy`, `bench/results/recall_site.json`). Then no update of
the shared blocks tells the forget people from the others.
The only parameters that only the forget entities use are their own token rows. Training those
rows makes the edit keyed on the entity and leaves every prompt that does not name one untouched.

The rows are trained only when the forget set is entity-level: no forget entity is also the
entity of a retain fact, as in TOFU's forget splits (`rows=auto`). When the retain set keeps
other facts about the same entities, moving the entity's key would erase those too. Nor are they
trained by default when the embedding is tied to the unembedding (SmolLM2): a tied row is also
the output vector of its token in every prediction, so it is not the entity's own. On SmolLM2
with an entity-level split of its built-in facts (a few countries forgotten whole), `ga` with the
rows forced on stops early with nothing left to forget but costs retain and holdout far more than
without them, where it runs all its steps and forgets a little less (`bench/entity_level.py ga
rows=entity` against `bench/entity_level.py ga`, in `bench/results/entity_level.json`).

Rows that the retain facts or ordinary prose also use are damped by the same projection that
`preserve` applies to the blocks. The embedding is read as a linear map of one-hot inputs, so its
input second moment C is diagonal (token frequencies f_t) and P = lam (C + lam I)^-1 scales row t
by lam / (f_t + lam): a token that the retain facts or prose never use keeps its whole update, and
a frequent one keeps almost none of it.

Hand-written because no library trains a sparse subset of embedding rows with a tied unembedding
kept exact: the rows live in a small (k, d) delta, added at the input (and, when the embedding is
tied to the unembedding, to those k logits), and merged into the weight at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from workbench.batching import Batch, encode
from workbench.errors import WorkbenchError
from workbench.facts import FactSet

RowsMode = Literal["auto", "entity", "none"]
ROWS = get_args(RowsMode)


def tied(model: nn.Module) -> bool:
    """Whether the input embedding is also the unembedding (one tensor)."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def rows_wanted(forget: FactSet, retain: FactSet, mode: str, entity_focus: bool,
                model: nn.Module | None = None) -> bool:
    """Whether to train (or prune) the forget entities' rows (see `TrainingConfig.rows`): `auto`
    needs entity-focused updates, an entity-level forget set and an untied embedding."""
    if mode not in ROWS:
        raise WorkbenchError(f"rows must be one of {ROWS}, got {mode!r}")
    if mode == "none":
        return False
    if not entity_focus:
        if mode == "entity":
            raise WorkbenchError("rows=entity needs every forget prompt to name its fact's entity "
                                 "(and positions=auto or entity)")
        return False
    if mode == "entity":
        return True
    if model is not None and tied(model):
        return False
    kept = {f.entity.casefold() for f in retain if f.entity}
    return not any(f.entity.casefold() in kept for f in forget)


def token_frequencies(sources: list[Batch], vocab: int) -> Tensor:
    """Share of each token id among the real tokens of `sources` (zeros when there are none)."""
    counts = torch.zeros(vocab, dtype=torch.float64)
    for b in sources:
        ids = b.input_ids[b.attention_mask.bool()].cpu()
        counts += torch.bincount(ids, minlength=vocab)[:vocab].double()
    return counts / counts.sum().clamp(min=1)


def entity_token_ids(tokenizer, forget: FactSet) -> Tensor:
    """The distinct token ids inside the forget facts' entity spans (as their prompts tokenise)."""
    b = encode(tokenizer, [f.prompt for f in forget], spans=[f.entity for f in forget])
    ids = torch.unique(b.input_ids[b.focus])
    if len(ids) == 0:
        raise WorkbenchError("rows: the forget facts' entity spans cover no tokens")
    return ids


class EntityRows(nn.Module):
    """A trainable (k, d) delta on the input-embedding rows `ids`; `scale[i]` multiplies each
    update of row i (1: free, ~0: frozen)."""

    def __init__(self, model: nn.Module, ids: Tensor, scale: Tensor) -> None:
        super().__init__()
        emb = model.get_input_embeddings()
        vocab, dim = emb.weight.shape
        dev = emb.weight.device
        self.register_buffer("ids", ids.to(dev))
        self.register_buffer("scale", scale.to(dev, emb.weight.dtype))
        lut = torch.full((vocab,), -1, dtype=torch.long, device=dev)
        lut[self.ids] = torch.arange(len(ids), device=dev)
        self.register_buffer("lut", lut)
        self.delta = nn.Parameter(torch.zeros(len(ids), dim, dtype=emb.weight.dtype, device=dev))
        self.tied = tied(model)

    @classmethod
    def for_facts(cls, model: nn.Module, tokenizer, forget: FactSet, sources: list[Batch],
                  preserve: float) -> EntityRows:
        """Rows of the tokens inside the forget facts' entity spans, damped by their frequency in
        `sources` when `preserve` > 0."""
        ids = entity_token_ids(tokenizer, forget)
        vocab = model.get_input_embeddings().weight.shape[0]
        scale = torch.ones(len(ids), dtype=torch.float64)
        if preserve > 0 and sources:
            freq = token_frequencies(sources, vocab)[ids]
            lam = preserve / vocab  # preserve * trace(C) / dim, with trace(C) = 1 for one-hots
            scale = lam / (freq + lam)
        return cls(model, ids, scale)

    def attach(self, model: nn.Module, focus: Callable[[], Tensor | None]
               ) -> list[torch.utils.hooks.RemovableHandle]:
        """Add the delta wherever a row's token occurs; gradients flow in only at `focus()`
        positions (all positions when it returns None)."""
        def embed(_mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
            j = self.lut[args[0]]
            add = self.delta[j.clamp(min=0)] * (j >= 0).unsqueeze(-1).to(out.dtype)
            mask = focus()
            if mask is not None and torch.is_grad_enabled():
                add = torch.where(mask[:, : add.shape[1], None], add, add.detach())
            return out + add

        def unembed(_mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
            return out.index_add(-1, self.ids, args[0] @ self.delta.T.to(args[0].dtype))

        handles = [model.get_input_embeddings().register_forward_hook(embed)]
        if self.tied:
            handles.append(model.get_output_embeddings().register_forward_hook(unembed))
        return handles

    @contextmanager
    def attached(self, model: nn.Module, focus: Callable[[], Tensor | None]) -> Iterator[None]:
        """`attach` for the duration of a with-block."""
        handles = self.attach(model, focus)
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def constrain(self, before: Tensor) -> None:
        """Scale the last update of each row by its `scale` (call after the optimiser step)."""
        with torch.no_grad():
            self.delta.copy_(before + (self.delta - before) * self.scale.unsqueeze(-1))

    @torch.no_grad()
    def merge(self, model: nn.Module) -> None:
        """Write the delta into the embedding weight (tied: the unembedding with it)."""
        w = model.get_input_embeddings().weight
        w[self.ids] += self.delta.to(w.dtype)
