"""Capture activations at chosen layers, hook points and positions, batched, stopping early.

Hook names follow TransformerLens (`blocks.{L}.hook_resid_post` ...) whatever the backend:
- `hf` (default): plain PyTorch forward hooks on the HF module tree. Written by hand because it is
  the one path with no wrapper overhead that also stops the forward pass right after the deepest
  block it needs (an exception from the hook), so capture costs at most one forward pass.
- `tl`: TransformerLens `run_with_cache(names_filter=..., stop_at_layer=...)` on the bridge view.
- `nnsight`: an nnsight trace that saves the same modules' outputs and stops; `remote=True` runs it
  on a hosted model through NDIF (see the README).
All three agree on the bundled model within the tolerances tests/workbench/test_capture.py asserts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.batching import Batch, chunks, encode
from workbench.errors import LayerError
from workbench.models import Subject, hidden_of
from workbench.placement import rows_per_batch

Point = Literal["resid_pre", "attn_out", "mlp_out", "resid_post"]  # in execution order
POINTS = get_args(Point)
POSITIONS = ("last", "answer", "all")


def hook_name(layer: int, point: str = "resid_post") -> str:
    return f"blocks.{layer}.hook_{point}"


@dataclass(frozen=True)
class Activations:
    """Captured activations keyed by TL hook name.

    With position `last` or `answer` each tensor is [n, d_model]; with `all` it is
    [n, max_len, d_model] right-padded, and `lengths` gives each row's real length."""

    acts: dict[str, Tensor]
    layers: tuple[int, ...]
    points: tuple[str, ...]
    position: str
    lengths: Tensor

    def __getitem__(self, name: str) -> Tensor:
        return self.acts[name]

    def layer(self, layer: int, point: str = "resid_post") -> Tensor:
        return self.acts[hook_name(layer, point)]

    def stack(self, point: str = "resid_post") -> Float[Tensor, "layer n d_model"]:
        """All captured layers of one point stacked on a leading layer axis."""
        return torch.stack([self.layer(L, point) for L in self.layers])


class _Stop(Exception):
    """Raised from a hook to end the forward pass once every wanted layer has run."""


def check_request(subject: Subject, layers: Sequence[int], points: Sequence[str] = ("resid_post",),
                  position: str = "last") -> None:
    """Raise a clear error for layers, hook points or a position `capture` cannot give."""
    if not layers:
        raise LayerError("no layers requested")
    bad = [L for L in layers if not 0 <= L < subject.n_layers]
    if bad:
        raise LayerError(f"layer(s) {bad} out of range: {subject.name} has layers "
                         f"0..{subject.n_layers - 1}")
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        raise LayerError(f"unknown hook point(s) {unknown}; expected some of {POINTS}")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, not {position!r}")


def _select(h: Tensor, batch: Batch, position: str) -> Tensor:
    if position == "all":
        return h
    idx = batch.last if position == "last" else batch.answer_start
    return h[torch.arange(h.shape[0], device=h.device), idx]


def _capture_hf(subject: Subject, batch: Batch, layers, points, position) -> dict[str, Tensor]:
    blocks = subject.layers()
    stop_layer = max(layers)
    out: dict[str, Tensor] = {}
    handles = []

    def saver(name: str, stop: bool):
        def hook(_mod, _args, output):
            out[name] = _select(hidden_of(output), batch, position)
            if stop and all(hook_name(stop_layer, p) in out for p in points):
                raise _Stop

        return hook

    try:
        for L in layers:
            blk = blocks[L]
            for p in points:
                name, stop = hook_name(L, p), L == stop_layer
                if p == "resid_pre":
                    def pre(_mod, args, kwargs, name=name):
                        h = args[0] if args else kwargs["hidden_states"]
                        out[name] = _select(h, batch, position)

                    handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
                elif p == "resid_post":
                    handles.append(blk.register_forward_hook(saver(name, stop)))
                elif p == "attn_out":
                    handles.append(_attn(blk).register_forward_hook(saver(name, stop)))
                else:
                    handles.append(blk.mlp.register_forward_hook(saver(name, stop)))
        try:
            subject.model(input_ids=batch.input_ids, use_cache=False)
        except _Stop:
            pass
    finally:
        for h in handles:
            h.remove()
    return out


def _attn(block):
    for name in ("self_attn", "attn", "attention"):
        if hasattr(block, name):
            return getattr(block, name)
    raise LayerError(f"cannot find the attention module of {type(block).__name__}")


def _capture_tl(subject: Subject, batch: Batch, layers, points, position) -> dict[str, Tensor]:
    names = {hook_name(L, p) for L in layers for p in points}
    stop = max(layers) + 1
    _, cache = subject.hooked.run_with_cache(
        batch.input_ids, names_filter=lambda n: n in names,
        stop_at_layer=stop if stop < subject.n_layers else None, return_type=None,
    )
    return {n: _select(cache[n], batch, position) for n in names}


def nnsight_value(block: Any, point: str) -> Any:
    """Inside an nnsight trace, the value at `point` of a decoder block's envoy (Llama-style
    module names: `self_attn`, `mlp`); a block's output may be a tuple (`hidden_of` reads it).
    Accesses must come in execution order: `POINTS` order within a block, blocks in order."""
    if point == "resid_pre":
        return block.input
    if point == "attn_out":
        return block.self_attn.output[0]
    if point == "mlp_out":
        return block.mlp.output
    return block.output


def _capture_nnsight(subject: Subject, batch: Batch, layers, points, position,
                     remote: bool = False) -> dict[str, Tensor]:
    lm = subject.nnsight()
    blocks = lm.model.layers
    saved = {}
    with lm.trace(batch.input_ids, remote=remote) as tracer:
        for L in sorted(layers):  # nnsight needs module accesses in execution order
            for p in POINTS:
                if p in points:
                    saved[hook_name(L, p)] = nnsight_value(blocks[L], p).save()
        tracer.stop()
    return {n: _select(hidden_of(v).to(subject.device), batch, position) for n, v in saved.items()}


_BACKENDS = {"hf": _capture_hf, "tl": _capture_tl, "nnsight": _capture_nnsight}


@torch.no_grad()
def capture(subject: Subject, prompts: Sequence[str], layers: Sequence[int],
            points: Sequence[str] = ("resid_post",), position: str = "last",
            answers: Sequence[str] | None = None, batch_size: int = 32, backend: str = "hf",
            remote: bool = False, progress: bool = False) -> Activations:
    """Capture activations for `prompts` at `layers` x `points`.

    `position`: `last` (last prompt token), `answer` (the answer's first token; needs `answers`),
    or `all` (every token, right-padded). Runs only up to the deepest requested layer, batched,
    on the subject's device; results stay on that device."""
    layers = tuple(sorted(set(int(L) for L in layers)))
    check_request(subject, layers, points, position)
    points = tuple(p for p in POINTS if p in set(points))  # execution order
    if position == "answer" and answers is None:
        raise ValueError("position='answer' needs the answers")
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(_BACKENDS)}")
    if remote and backend != "nnsight":
        raise ValueError("remote execution is only available with backend='nnsight'")
    parts: dict[str, list[Tensor]] = {}
    lengths = []
    slices = list(chunks(len(prompts), rows_per_batch(subject, prompts, batch_size, answers)))
    for sl in tqdm(slices, desc="capture", disable=not progress or len(slices) < 2):
        b = encode(subject.tokenizer, prompts[sl], None if answers is None else answers[sl],
                   device=subject.device)
        kw = {"remote": remote} if backend == "nnsight" else {}
        got = _BACKENDS[backend](subject, b, layers, points, position, **kw)
        for n, t in got.items():
            parts.setdefault(n, []).append(t)
        lengths.append(b.lengths)
    acts = {n: _cat(ts, position) for n, ts in parts.items()}
    return Activations(acts, layers, points, position, torch.cat(lengths))


def _cat(ts: list[Tensor], position: str) -> Tensor:
    if position != "all":
        return torch.cat(ts)
    width = max(t.shape[1] for t in ts)
    return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in ts])
