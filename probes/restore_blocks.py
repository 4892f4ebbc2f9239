"""Answer log-probs of M1 with a group of M0's weights swapped in, computed from the first
restored block on.

Restoring block s leaves every earlier block's output as M1's own, so one clean pass of M1 that
keeps each block's input serves every group: a group whose first restored block is s runs only
blocks s.. (about half the model on average over a scan's windows). The blocks are called
directly with the full causal mask, as the model's own forward would. Kept only where that is
the same computation: a Llama-style layout (rotary embeddings, final norm, blocks under
`model.layers`), no hook on the model or its backbone, and the cached states within a memory
cap; a group that touches the embeddings (a tied head among them) runs the whole model instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probes.patch_blocks import BlockRunner
from workbench.batching import Batch, chunks, encode
from workbench.models import decoder_layers, hidden_of
from workbench.scoring import answer_scores, scores_at_answers

# the clean states of one scan are kept only under this size (else every group runs in full)
MAX_STATE_BYTES = 512 * 2**20


class PrefixScan:
    """Scores `params` groups on fixed prompts and answers for one model (see the module doc)."""

    def __init__(self, model: nn.Module, tokenizer, prompts: Sequence[str],
                 answers: Sequence[str], batch_size: int, device) -> None:
        self.model = model
        self.batches = [encode(tokenizer, prompts[sl], answers[sl], device=device)
                        for sl in chunks(len(prompts), batch_size)]
        self.blocks = decoder_layers(model)
        n, d = len(self.blocks), model.config.hidden_size
        size = sum(b.input_ids.numel() for b in self.batches) * (n + 1) * d * 4
        self.states: list[list[Tensor]] | None = None
        if BlockRunner.supported(model) and size <= MAX_STATE_BYTES:
            self.states = [self._clean(b) for b in self.batches]
        # global parameter name -> (module index, name inside it); the final norm is index n
        modules = [*self.blocks, model.model.norm] if self.states else []
        full = {id(p): name for name, p in model.named_parameters()}
        self.where = {full[id(p)]: (i, local) for i, mod in enumerate(modules)
                      for local, p in mod.named_parameters() if id(p) in full}

    @torch.no_grad()
    def _clean(self, b: Batch) -> list[Tensor]:
        """Every block's input over the whole batch, and the last block's output."""
        states: list[Tensor] = []
        handles = [blk.register_forward_pre_hook(
            lambda _m, args, kwargs: states.append(args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True) for blk in self.blocks]
        handles.append(self.blocks[-1].register_forward_hook(
            lambda _m, _a, o: states.append(hidden_of(o))))
        try:
            self.model.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                             use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return states

    def start(self, params: dict[str, Tensor]) -> int | None:
        """The first block the group changes (len(blocks): only the final norm), or None when
        the group reaches outside the blocks and the final norm (run the whole model)."""
        if self.states is None or any(name not in self.where for name in params):
            return None
        return min((self.where[name][0] for name in params), default=len(self.blocks))

    @torch.no_grad()
    def logprobs(self, params: dict[str, Tensor] | None) -> Tensor:
        """Summed answer log-prob per prompt with `params` swapped in (None: M1 as it is)."""
        params = params or {}
        s = self.start(params)
        if s is None:
            return torch.cat([answer_scores(self.model, b, params or None).total.cpu()
                              for b in self.batches])
        return torch.cat([self._from(s, b, states, params).cpu()
                          for b, states in zip(self.batches, self.states, strict=True)])

    def _from(self, s: int, b: Batch, states: list[Tensor], params: dict[str, Tensor]) -> Tensor:
        inner = self.model.model
        width = b.input_ids.shape[1]
        dev = b.input_ids.device
        pos = torch.arange(width, device=dev)[None].expand(len(b.input_ids), -1)
        causal = torch.ones(width, width, dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & b.attention_mask.bool()[:, None, :])[:, None]
        local: dict[int, dict[str, Tensor]] = {}
        for name, value in params.items():
            i, inside = self.where[name]
            local.setdefault(i, {})[inside] = value
        h = states[s]
        emb = inner.rotary_emb(h, position_ids=pos)
        kw = {"attention_mask": mask, "position_ids": pos, "position_embeddings": emb,
              "use_cache": False}
        for i in range(s, len(self.blocks)):
            blk = self.blocks[i]
            out = (torch.func.functional_call(blk, local[i], (h,), kw) if i in local
                   else blk(h, **kw))
            h = hidden_of(out)
        n = len(self.blocks)
        hn = (torch.func.functional_call(inner.norm, local[n], (h,)) if n in local
              else inner.norm(h))
        head = self.model.get_output_embeddings()
        return scores_at_answers(head(hn[:, :-1][b.answer_mask[:, :-1]]), b).total

