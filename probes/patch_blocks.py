"""Block-skipping patching of the residual stream at the last prompt token.

Patching `resid_post` of block L (or `resid_pre` of block L+1) at the last prompt token changes
nothing at blocks 0..L: earlier tokens never see it (causal attention) and the answer tokens at
those blocks attend only to unchanged keys. So a row only needs blocks L+1..N-1, started from
[the source's vector at the last prompt token, the base's clean stream at the answer tokens] on
top of the base's clean key/value cache for the prompt prefix. Rows run in streams of equal
suffix length; at each block the rows that start there join the batch, so every block runs once
per stream and chunk. Hand-written (calling the HF decoder blocks directly) because neither
TransformerLens nor HF can start a forward pass midway through the stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from workbench.batching import Batch
from workbench.models import decoder_layers, hidden_of
from workbench.scoring import answer_scores


def start_layer(cells, n_layers: int) -> int | None:
    """The first block a row must run, or None when its cells need the generic path."""
    if len(cells) != 1:
        return None
    layer, point, back = cells[0]
    if back != 0:
        return None
    if point == "resid_post":
        return layer + 1
    if point == "resid_pre":
        return layer
    return None


class _Prefix:
    """A stand-in for HF's cache at one block: the prompt prefix's keys/values, then the new ones."""

    def __init__(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v = k, v

    def update(self, k: Tensor, v: Tensor, layer_idx: int, *args, **kwargs):
        return torch.cat([self.k, k.to(self.k.dtype)], 2), torch.cat([self.v, v.to(self.v.dtype)], 2)


class BlockRunner:
    """Runs rows from a start block to the output on a base's clean prompt pass."""

    @staticmethod
    def supported(model: nn.Module) -> bool:
        """A Llama-style layout, and no hook on the whole model: such a hook (an intervention
        that reads the input ids) would never see the rows, which skip the model's forward."""
        inner = getattr(model, "model", None)
        if not all(hasattr(inner, a) for a in ("rotary_emb", "norm", "layers")) or \
                model.get_output_embeddings() is None:
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks for m in (model, inner))

    def __init__(self, model: nn.Module, b: Batch, kv: list[tuple[Tensor, Tensor]],
                 states: list[Tensor], n_ans: Sequence[int]) -> None:
        """`kv[l]`: the clean cache of block l [facts, heads, width, d]; `states[l]`: the clean
        input of block l (l = N: the last block's output) at positions last..last+s-1."""
        self.model, self.b, self.kv, self.states = model, b, kv, states
        self.blocks = decoder_layers(model)
        self.n_ans = list(n_ans)
        dev = b.input_ids.device
        s = max(self.n_ans)
        self.pos = b.last[:, None] + torch.arange(s, device=dev)[None]
        idx = self.pos.clamp(max=b.input_ids.shape[1] - 2) + 1
        self.target = b.input_ids.gather(1, idx)
        self.width = b.input_ids.shape[1]

    def run(self, rows: Sequence[tuple[int, int, Tensor | None]], chunk: int = 256) -> Tensor:
        """Answer log-prob per (fact, start block, vector at the last prompt token or None)."""
        out = torch.empty(len(rows), dtype=torch.float32, device=self.b.input_ids.device)
        streams: dict[int, list[int]] = {}
        for i, (f, _, _) in enumerate(rows):
            streams.setdefault(self.n_ans[f], []).append(i)
        for k, idxs in streams.items():
            idxs.sort(key=lambda i: rows[i][1])
            step = max(1, max(chunk, 1024) // k)  # rows share the per-block calls: go wide
            for s in range(0, len(idxs), step):
                part = idxs[s:s + step]
                out[torch.tensor(part, device=out.device)] = self._stream([rows[i] for i in part], k)
        return out

    def _stream(self, rows, k: int) -> Tensor:
        dev = self.b.input_ids.device
        facts = torch.tensor([f for f, _, _ in rows], device=dev)
        starts = [L for _, L, _ in rows]
        n = len(self.blocks)
        inner = self.model.model
        # the mask: prefix keys before each row's last prompt token, then causal over the suffix
        prefix = torch.arange(self.width, device=dev)[None] < self.b.last[facts][:, None]
        causal = torch.ones(k, k, dtype=torch.bool, device=dev).tril()
        mask_all = torch.cat([prefix[:, None, :].expand(-1, k, -1),
                              causal[None].expand(len(rows), -1, -1)], 2)[:, None]
        pos_all = self.pos[facts, :k]
        h = None
        joined = 0
        for layer in range(min(starts), n + 1):
            new = [i for i in range(joined, len(rows)) if starts[i] == layer]
            if new:
                lo, hi = new[0], new[-1] + 1
                h0 = self.states[layer][facts[lo:hi], :k].clone()
                for j in range(lo, hi):
                    if rows[j][2] is not None:
                        h0[j - lo, 0] = rows[j][2].to(h0.dtype)
                h = h0 if h is None else torch.cat([h, h0])
                joined = hi
            if layer == n:
                break
            f = facts[:joined]
            pos = pos_all[:joined]
            k_, v_ = self.kv[layer]
            emb = inner.rotary_emb(h, position_ids=pos)
            h = hidden_of(self.blocks[layer](h, attention_mask=mask_all[:joined], position_ids=pos,
                                          past_key_values=_Prefix(k_[f], v_[f]),
                                          position_embeddings=emb, use_cache=True))
        return target_logprobs(self.model.get_output_embeddings(), inner.norm(h),
                               self.target[facts, :k]).sum(1)


def target_logprobs(head: nn.Module, h: Tensor, target: Tensor, chunk: int = 256) -> Tensor:
    """log p(target) from hidden states h [..., d] through `head`, `chunk` positions at a time
    (a stream of a thousand positions would hold [positions, vocab] floats twice at once)."""
    x, t = h.reshape(-1, h.shape[-1]), target.reshape(-1)
    out = torch.empty(len(t), dtype=torch.float32, device=h.device)
    for s in range(0, len(t), chunk):
        logits = head(x[s:s + chunk]).float()
        out[s:s + chunk] = (logits.gather(-1, t[s:s + chunk, None]).squeeze(-1)
                            - torch.logsumexp(logits, -1))
    return out.view(target.shape)


def clean_pass(model: nn.Module, b: Batch, s: int):
    """One cached forward pass of the base, keeping every block's input at positions
    last..last+s-1 (and the last block's output): returns (answer log-probs, cache, states)."""
    blocks = decoder_layers(model)
    dev = b.input_ids.device
    idx = (b.last[:, None] + torch.arange(s, device=dev)[None]).clamp(max=b.input_ids.shape[1] - 1)
    states: list[Tensor | None] = [None] * (len(blocks) + 1)

    def grab(h: Tensor) -> Tensor:
        return h.gather(1, idx[:, :, None].expand(-1, -1, h.shape[-1])).clone()

    handles = []
    for i, blk in enumerate(blocks):
        def pre(_m, args, kwargs, i=i):
            states[i] = grab(args[0] if args else kwargs["hidden_states"])
        handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
    handles.append(blocks[-1].register_forward_hook(
        lambda _m, _a, o: states.__setitem__(len(blocks), grab(hidden_of(o)))))
    try:
        scores = answer_scores(model, b, use_cache=True)
    finally:
        for h in handles:
            h.remove()
    return scores.total, scores.cache, states
