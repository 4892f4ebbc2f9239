"""Activation patching: put a source model's activations into a base model, batched over cells.

A *cell* is (layer, point, back): the hook point's output at `back` tokens before the last prompt
token (0 = the answer-predicting position; negative = the teacher-forced answer tokens, -1 the
first). Each batch row is one fact with a set of cells patched
at once, so a whole layers x points (x positions, x windows) sweep is a few batched forward
passes instead of one pass per cell. Patching only the last prompt token leaves every earlier
token unchanged (causal attention), so the `incremental` path runs the base model once on the
full prompts with a KV cache, then runs only the last prompt token and the answer tokens for every
row on top of that cache; residual patches there skip the blocks before the patch as well
(`probes.patch_blocks`). It checks itself against a full forward pass on the unpatched base and
falls back to the `full` path (whole sequences, one row per fact x cell set) when they disagree
(e.g. an intervention that reads the whole prompt). Hooks are plain PyTorch forward hooks on the
HF modules, written by hand because TransformerLens' helper runs one forward pass per cell
(`tl_reference_patching` wraps it, for the equivalence tests and the benchmark).

`backend="nnsight"` runs every pass (the source's capture, the unpatched and the patched runs of
the base) as nnsight traces instead, one per batch of rows, writing the source's values into the
traced modules' outputs and saving only the answer log-probs; with `remote=True` the traces run
on nnsight's hosted models (NDIF), so both models must be hosted there. It takes whole sequences
per row, as the `full` path does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from probes.patch_blocks import BlockRunner, clean_pass, start_layer, target_logprobs
from workbench.batching import Batch, chunks, encode
from workbench.capture import POINTS, _attn, capture, nnsight_value
from workbench.errors import LayerError, WorkbenchError
from workbench.models import Subject, decoder_layers, hidden_of, with_hidden
from workbench.placement import batch_bytes
from workbench.scoring import answer_scores, backbone_and_head

# a chunk of incremental rows copies the prompts' key/value cache for each row (and the forward
# pass concatenates the new keys onto it): rows per chunk are cut to keep that under this size
# on the CPU (on a GPU, under a share of its free memory)
INCREMENTAL_CHUNK_BYTES = 128 * 2**20

Cell = tuple[int, str, int]  # (layer, point, back): back = tokens before the last prompt token


@dataclass(frozen=True)
class PatchRun:
    """Answer log-probs of the base per row, plus the unpatched base / source per fact."""

    logprobs: np.ndarray  # [rows]
    base: np.ndarray  # [facts]
    source: np.ndarray  # [facts]
    method: str  # "incremental", "full" or "nnsight"


def answer_logprob_from_logits(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Sum of log p(target) over masked positions: logits [b, s, V], targets/mask [b, s]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(1)


def _module(model: nn.Module, layer: int, point: str) -> nn.Module:
    block = decoder_layers(model)[layer]
    if point in ("resid_pre", "resid_post"):
        return block
    if point == "attn_out":
        return _attn(block)
    if point == "mlp_out":
        return block.mlp
    raise LayerError(f"unknown hook point {point!r}; expected one of {POINTS}")


def _attach(model: nn.Module, plan: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]]):
    """One hook per (layer, point) that writes `vals` into rows `rows` at positions `pos`."""
    handles = []
    for (layer, point), (rows, pos, vals) in plan.items():
        mod = _module(model, layer, point)

        def put(h: Tensor, rows=rows, pos=pos, vals=vals) -> Tensor:
            h = h.clone()
            h[rows, pos] = vals.to(h.dtype)
            return h

        if point == "resid_pre":
            def pre(_m, args, kwargs, put=put):
                if args:
                    return (put(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": put(kwargs["hidden_states"])}

            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(_m, _args, output, put=put):
                return with_hidden(output, put(hidden_of(output)))

            handles.append(mod.register_forward_hook(post))
    return handles


def _plan(chunk_rows: Sequence[tuple[int, tuple[Cell, ...]]], src: dict[tuple[int, str], Tensor],
          pos_of: Callable[[int, int], int], device) -> dict:
    """Group a chunk's cells by (layer, point) into (row indices, positions, source vectors)."""
    groups: dict[tuple[int, str], tuple[list[int], list[int], list[int]]] = {}
    for r, (fact, cells) in enumerate(chunk_rows):
        for layer, point, back in cells:
            g = groups.setdefault((layer, point), ([], [], []))
            g[0].append(r)
            g[1].append(pos_of(fact, back))
            g[2].append(fact)
    plan = {}
    for key, (rs, ps, fs) in groups.items():
        a = src[key]
        rows, pos, facts = (torch.tensor(x, device=device) for x in (rs, ps, fs))
        # "all"-position captures are indexed by absolute position (the full path's positions)
        plan[key] = (rows, pos, a[facts, pos] if a.ndim == 3 else a[facts])
    return plan


def source_activations(source: Subject, prompts: Sequence[str], cells: set[Cell],
                       batch_size: int = 32, answers: Sequence[str] | None = None,
                       backend: str = "hf", remote: bool = False
                       ) -> dict[tuple[int, str], Tensor]:
    """The source's activations for every (layer, point) in `cells`: [facts, d] at the last
    prompt token, or [facts, pos, d] when some cell patches another position (on the prompts
    followed by `answers`, teacher-forced, when given: needed for answer positions)."""
    layers = sorted({c[0] for c in cells})
    points = sorted({c[1] for c in cells})
    position = "all" if any(c[2] for c in cells) else "last"
    acts = capture(source, list(prompts), layers, points, position=position,
                   answers=list(answers) if answers is not None and position == "all" else None,
                   batch_size=batch_size, backend=backend, remote=remote)
    return {(L, p): acts.layer(L, p) for L in layers for p in points}


@torch.no_grad()
def patch(base: Subject, source: Subject, prompts: Sequence[str], answers: Sequence[str],
          rows: Sequence[tuple[int, tuple[Cell, ...]]], batch_size: int = 256,
          method: str = "auto", progress: bool = False, backend: str = "hf",
          remote: bool = False) -> PatchRun:
    """Answer log-prob of `base` for each row (fact index, cells patched from `source`);
    `backend="nnsight"` (optionally `remote`) runs the passes as nnsight traces (module doc)."""
    if method not in ("auto", "incremental", "full"):
        raise ValueError(f"method must be auto, incremental or full, not {method!r}")
    if backend not in ("hf", "nnsight"):
        raise ValueError(f"patching backend must be hf or nnsight, not {backend!r}")
    if remote and backend != "nnsight":
        raise ValueError("remote execution is only available with backend='nnsight'")
    if not rows:
        raise WorkbenchError("no patching rows to run")
    cells = {c for _, cs in rows for c in cs}
    bad = [c for c in cells if not 0 <= c[0] < base.n_layers or c[1] not in POINTS]
    if bad:
        raise LayerError(f"invalid patch cell(s) {sorted(bad)[:5]} for {base.name} "
                         f"({base.n_layers} layers, points {POINTS})")
    dev = base.device
    b = encode(base.tokenizer, prompts, answers, device=dev)
    _check_positions(rows, b)
    if backend == "nnsight":
        return _patch_nnsight(base, source, prompts, answers, rows, b, cells, batch_size, remote,
                              progress)
    if any(c[2] for c in cells):
        src = {k: v.to(dev) for k, v in
               source_activations(source, prompts, cells, answers=answers).items()}
        lp_src = None
    else:  # one pass of the source gives both its activations and its answer log-probs
        src, lp_src = _source_pass(source, prompts, answers, cells)
        src, lp_src = {k: v.to(dev) for k, v in src.items()}, lp_src.to(dev)
    use_inc = method == "incremental" or (method == "auto" and not any(c[2] for c in cells))
    if use_inc and any(c[2] for c in cells):
        raise WorkbenchError("the incremental path patches only the last prompt token (back=0)")
    inc = _Incremental(base, b) if use_inc else None
    lp_base = inc.lp_full if inc is not None else torch.cat(
        [answer_scores(base.model, encode(base.tokenizer, prompts[s], answers[s], dev)).total
         for s in chunks(len(prompts), 64)])
    if lp_src is None:
        lp_src = torch.cat([answer_scores(source.model, encode(
            source.tokenizer, prompts[s], answers[s], source.device)).total.to(dev)
            for s in chunks(len(prompts), 64)])
    out = None
    if inc is not None:
        out = _incremental_rows(inc, rows, src, lp_base, batch_size, method, progress)
    used = "incremental" if out is not None else "full"
    if out is None:
        last = b.last.tolist()
        out = _sweep(lambda rs, plan: _full_rows(base, b, rs, plan), rows, src,
                     lambda f, back: last[f] - back, batch_size, dev, progress, "patch (full)")
    return PatchRun(out.cpu().numpy(), lp_base.cpu().numpy(), lp_src.cpu().numpy(), used)


def _patch_nnsight(base: Subject, source: Subject, prompts, answers, rows, b: Batch,
                   cells: set[Cell], batch_size: int, remote: bool, progress: bool) -> PatchRun:
    """`patch` with every pass an nnsight trace (whole sequences per row, like the full path)."""
    dev = base.device
    src = {k: v.to(dev) for k, v in source_activations(
        source, prompts, cells, answers=answers, backend="nnsight", remote=remote).items()}
    plain = [(f, ()) for f in range(len(prompts))]

    def unpatched(subject: Subject, batch: Batch) -> Tensor:
        return torch.cat([_nnsight_rows(subject, batch, plain[sl], {}, remote).to(dev)
                          for sl in chunks(len(plain), 64)])

    lp_base = unpatched(base, b)
    lp_src = unpatched(source, encode(source.tokenizer, prompts, answers, device=source.device))
    last = b.last.tolist()
    out = _sweep(lambda rs, plan: _nnsight_rows(base, b, rs, plan, remote), rows, src,
                 lambda f, back: last[f] - back, batch_size, dev, progress, "patch (nnsight)")
    return PatchRun(out.cpu().numpy(), lp_base.cpu().numpy(), lp_src.cpu().numpy(), "nnsight")


def _nnsight_rows(subject: Subject, b: Batch, chunk_rows, plan, remote: bool) -> Tensor:
    """Answer log-probs of one batch of rows, with `plan`'s values written into the traced
    modules' outputs (one nnsight trace; only the log-probs are saved, so a remote run sends
    back one number a row)."""
    r = b.rows(torch.tensor([f for f, _ in chunk_rows], device=b.input_ids.device))
    lm = subject.nnsight()
    blocks = lm.model.layers
    order = sorted(plan, key=lambda k: (k[0], POINTS.index(k[1])))  # execution order
    with lm.trace(r.input_ids, attention_mask=r.attention_mask, remote=remote):
        for layer, point in order:
            rows, pos, vals = plan[(layer, point)]
            h = hidden_of(nnsight_value(blocks[layer], point))
            h[rows, pos] = vals.to(h.dtype)
        lp = answer_logprob_from_logits(lm.output.logits[:, :-1], r.input_ids[:, 1:],
                                        r.answer_mask[:, :-1]).save()
    return lp.detach()


def _check_positions(rows: Sequence[tuple[int, tuple[Cell, ...]]], b: Batch) -> None:
    """Every cell's position (last prompt token - back) must lie inside its fact's tokens."""
    last, length = b.last.tolist(), b.lengths.tolist()
    for f, cs in rows:
        out = [c for c in cs if not 0 <= last[f] - c[2] < length[f]]
        if out:
            raise LayerError(f"invalid patch cell(s) {out[:5]} for fact {f}: back must lie in "
                             f"{last[f] + 1 - length[f]}..{last[f]} (its prompt and answer tokens)")


def _sweep(run, rows, src, pos_of, batch_size, dev, progress, desc) -> Tensor:
    parts = []
    slices = list(chunks(len(rows), batch_size))
    for sl in tqdm(slices, desc=desc, disable=not progress or len(slices) < 2):
        chunk_rows = rows[sl]
        parts.append(run(chunk_rows, _plan(chunk_rows, src, pos_of, dev)))
    return torch.cat(parts)


def _agrees(check: Tensor, lp_base: Tensor, model: nn.Module) -> bool:
    """The cached path's unpatched answer log-probs equal the full pass's: within 1e-3 nats per
    fact in float32. In a 16-bit dtype the two orders of summation round apart (SmolLM2 in
    bfloat16 on its 80 built-in facts: up to 0.15 nats on an uncertain answer, 0.002 on known
    ones), so there the mean difference must stay under 0.05 nats and the largest under 0.5: a
    wrong cache is off by nats on most facts."""
    if next(model.parameters()).element_size() >= 4:
        return torch.allclose(check, lp_base, atol=1e-3, rtol=0)
    diff = (check - lp_base).abs()
    return bool(diff.mean() <= 0.05 and diff.max() <= 0.5)


def _incremental_rows(inc: _Incremental, rows, src, lp_base: Tensor, batch_size: int,
                      method: str, progress: bool) -> Tensor | None:
    """Rows on the incremental path: residual patches skip the blocks before the patch (when
    a self-check on the unpatched base passes), other rows run every block. None: fall back."""
    n, nf = len(decoder_layers(inc.model)), len(lp_base)
    starts = [start_layer(cs, n) for _, cs in rows]
    fast = [i for i, L in enumerate(starts) if L is not None] if inc.blocks is not None else []
    if fast:
        check = inc.blocks.run([(f, 0, None) for f in range(nf)], batch_size)
        if method != "incremental" and not _agrees(check, lp_base, inc.model):
            fast = []
    out = torch.empty(len(rows), dtype=torch.float32, device=lp_base.device)
    if fast:
        jobs = [(rows[i][0], starts[i], src[rows[i][1][0][:2]][rows[i][0]]) for i in fast]
        out[torch.tensor(fast, device=out.device)] = inc.blocks.run(jobs, batch_size)
    rest = sorted(set(range(len(rows))) - set(fast))
    if not rest:
        return out
    check = inc.run([(i, ()) for i in range(nf)], {}, batch_size)
    if method != "incremental" and not _agrees(check, lp_base, inc.model):
        return None
    size = min(batch_size, inc.rows_within(batch_bytes(lp_base.device, INCREMENTAL_CHUNK_BYTES)))
    out[torch.tensor(rest, device=out.device)] = _sweep(
        lambda rs, plan: inc.run(rs, plan, size), [rows[i] for i in rest], src,
        lambda f, back: 0, size, lp_base.device, progress, "patch (incremental)")
    return out


@torch.no_grad()
def _source_pass(source: Subject, prompts, answers, cells: set[Cell], batch_size: int = 64
                 ) -> tuple[dict[tuple[int, str], Tensor], Tensor]:
    """The source's activations at the last prompt token for every (layer, point) in `cells`
    and its answer log-probs, from one forward pass per batch."""
    keys = sorted({c[:2] for c in cells})
    parts: dict[tuple[int, str], list[Tensor]] = {k: [] for k in keys}
    lps = []
    for sl in chunks(len(prompts), batch_size):
        b = encode(source.tokenizer, prompts[sl], answers[sl], source.device)
        rows = torch.arange(len(b.last), device=b.last.device)
        handles = []
        for key in keys:
            mod = _module(source.model, *key)
            if key[1] == "resid_pre":
                def pre(_m, args, kwargs, key=key, rows=rows, last=b.last):
                    h = args[0] if args else kwargs["hidden_states"]
                    parts[key].append(h[rows, last].clone())
                handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(_m, _a, o, key=key, rows=rows, last=b.last):
                    parts[key].append(hidden_of(o)[rows, last].clone())
                handles.append(mod.register_forward_hook(post))
        try:
            lps.append(answer_scores(source.model, b).total)
        finally:
            for h in handles:
                h.remove()
    return {k: torch.cat(v) for k, v in parts.items()}, torch.cat(lps)


def _full_rows(base: Subject, b: Batch, chunk_rows, plan) -> Tensor:
    idx = torch.tensor([f for f, _ in chunk_rows], device=b.input_ids.device)
    handles = _attach(base.model, plan)
    try:
        return answer_scores(base.model, b.rows(idx)).total
    finally:
        for h in handles:
            h.remove()


class _Incremental:
    """Runs `[last prompt token, answer tokens]` per row on a cached pass over the prompts."""

    def __init__(self, base: Subject, b: Batch) -> None:
        self.model, self.b = base.model, b
        n_ans = (b.lengths - b.last - 1).tolist()
        self.blocks: BlockRunner | None = None
        # the same pass gives the unpatched base's answer log-probs (one forward pass saved)
        if BlockRunner.supported(base.model):
            self.lp_full, cache, states = clean_pass(base.model, b, max(n_ans))
        else:
            scores = answer_scores(base.model, b, use_cache=True)
            self.lp_full, cache = scores.total, scores.cache
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]
        if BlockRunner.supported(base.model):
            self.blocks = BlockRunner(base.model, b, self.kv, states, n_ans)
        width = b.input_ids.shape[1]
        s = max(n_ans)
        dev = b.input_ids.device
        self.suffix = torch.zeros((len(n_ans), s), dtype=torch.long, device=dev)
        self.target = torch.zeros_like(self.suffix)
        self.smask = torch.zeros((len(n_ans), s), dtype=torch.float32, device=dev)
        for i, (last, k) in enumerate(zip(b.last.tolist(), n_ans, strict=True)):
            self.suffix[i, :k] = b.input_ids[i, last:last + k]
            self.target[i, :k] = b.input_ids[i, last + 1:last + 1 + k]
            self.smask[i, :k] = 1
        past = torch.arange(width, device=dev)[None] < b.last[:, None]  # keys before the last token
        self.mask = torch.cat([past.long(), self.smask.long()], 1)
        self.pos = b.last[:, None] + torch.arange(s, device=dev)[None]

    def rows_within(self, budget: int) -> int:
        """How many rows a chunk may hold with its cache copies under `budget` bytes."""
        per_row = sum(2 * (k[0].numel() + v[0].numel()) * k.element_size() for k, v in self.kv)
        return max(1, budget // max(1, per_row))

    def run(self, chunk_rows, plan, batch_size: int) -> Tensor:
        from transformers import DynamicCache

        idx = torch.tensor([f for f, _ in chunk_rows], device=self.b.input_ids.device)
        cache = DynamicCache(ddp_cache_data=[(k[idx], v[idx]) for k, v in self.kv])
        handles = _attach(self.model, plan)
        kw = {"input_ids": self.suffix[idx], "attention_mask": self.mask[idx],
              "position_ids": self.pos[idx], "past_key_values": cache, "use_cache": True}
        split = backbone_and_head(self.model)
        try:
            if split is None:
                out = self.model(**kw)
                return answer_logprob_from_logits(out.logits, self.target[idx], self.smask[idx])
            # the head on the answer positions alone, a few at a time (no [rows, s, vocab])
            hidden = split[0](**kw).last_hidden_state
            return (target_logprobs(split[1], hidden, self.target[idx]) * self.smask[idx]).sum(1)
        finally:
            for h in handles:
                h.remove()


# ----- the TransformerLens reference --------------------------------------------------------

def tl_reference_patching(base: Subject, source: Subject, prompts: Sequence[str],
                          answers: Sequence[str], point: str = "resid_post") -> np.ndarray:
    """Per-layer mean answer log-prob of `base` with `source`'s `point` patched at each row's last
    prompt token, by TransformerLens' own `generic_activation_patch` (one forward per layer).

    TL 3.9's helpers are typed for `HookedTransformer` but only use `cfg`, `run_with_hooks` and
    TL hook names, which `TransformerBridge` (`subject.hooked`) provides. The stock setters patch
    one position for the whole batch; right-padded prompts end at different positions, so this
    passes a setter that patches each row's own last token (index axis: layer only)."""
    from transformer_lens import patching as tlp

    b = encode(base.tokenizer, prompts, answers, device=base.device)
    names = {f"blocks.{L}.hook_{point}" for L in range(base.n_layers)}
    with torch.no_grad():
        _, cache = source.hooked.run_with_cache(b.input_ids, names_filter=lambda n: n in names)
    rows = torch.arange(len(prompts), device=base.device)

    def setter(corrupted, index, clean):
        corrupted[rows, b.last] = clean[rows, b.last]
        return corrupted

    def metric(logits):
        lp = answer_logprob_from_logits(logits[:, :-1], b.input_ids[:, 1:], b.answer_mask[:, :-1])
        return lp.mean()

    with torch.no_grad():
        out = tlp.generic_activation_patch(base.hooked, b.input_ids, cache, metric, setter, point,
                                           index_axis_names=("layer",))
    return out.cpu().numpy()
