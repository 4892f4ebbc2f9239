"""Round-to-nearest (RTN) weight quantization: the grid, its packed codes, and its cells.

Lives in the bottom layer because two layers read the same grid: the quantization attack
(`probes.quantization`) rounds M0 / M1 / the oracle onto it, and a known-truth control
(`workbench.controls.in_cell_suppressor`) edits a model inside its rounding cells, so that the
attack undoes that edit by construction. Per-group min-max scales over `group_size`
consecutive input columns of each row (llama.cpp's 4-bit blocks are groups of 32). Written here
rather than taken from a library: bitsandbytes has no RTN with min-max groups and no cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workbench.errors import WorkbenchError


def _groups(weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    """`weight` as float32 [rows, groups, group] (the last group padded with its last column,
    so its min and max stay its own) and the row length to cut back to."""
    rows = weight.detach().float().reshape(-1, weight.shape[-1])
    n = rows.shape[1]
    g = n if group_size is None or group_size >= n else group_size
    pad = (-n) % g
    if pad:
        rows = torch.cat([rows, rows[:, -1:].expand(-1, pad)], 1)
    return rows.reshape(rows.shape[0], -1, g), n


def _ungroup(groups: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    return groups.reshape(groups.shape[0], -1)[:, :n].reshape(like.shape).to(like.dtype)


def check_grid(bits: int, group_size: int | None) -> None:
    """A clear error for a grid RTN cannot build."""
    if not 1 <= bits <= 16:
        raise WorkbenchError(f"bits must be in 1..16, got {bits}")
    if group_size is not None and group_size < 1:
        raise WorkbenchError(f"group_size must be positive (or None), got {group_size}")


def _grid(groups: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo = groups.amin(-1, keepdim=True)
    return lo, ((groups.amax(-1, keepdim=True) - lo) / (2**bits - 1)).clamp_min(1e-12)


@dataclass(frozen=True)
class RTNState:
    """A weight quantized by `rtn_pack`: integer codes [rows, groups, group] (a byte each up to
    8 bits), each group's offset and step (float32), and what `_ungroup` needs to cut back."""

    codes: torch.Tensor
    lo: torch.Tensor
    step: torch.Tensor
    n: int
    like: torch.Tensor  # an empty tensor of the weight's shape and dtype (meta: no storage)


@torch.no_grad()
def rtn_pack(weight: torch.Tensor, bits: int, group_size: int | None = 32) -> RTNState:
    """Round-to-nearest codes of `weight` with a min-max scale and offset per group of
    `group_size` consecutive input columns of each row (None or >= the row: one group per
    row): each group holds at most 2**bits distinct values. `weight` is not touched."""
    check_grid(bits, group_size)
    groups, n = _groups(weight, group_size)
    lo, step = _grid(groups, bits)
    code_dtype = torch.uint8 if bits <= 8 else torch.int32
    codes = torch.round((groups - lo) / step).to(code_dtype)
    return RTNState(codes, lo, step, n, torch.empty(weight.shape, dtype=weight.dtype,
                                                   device="meta"))


@torch.no_grad()
def rtn_unpack(state: RTNState) -> torch.Tensor:
    """The de-quantized weight of `rtn_pack`'s state, in the weight's dtype."""
    return _ungroup(state.lo + state.step * state.codes.float(), state.n, state.like)


@torch.no_grad()
def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = 32) -> torch.Tensor:
    """`weight` round-to-nearest quantized (`rtn_pack`) and de-quantized back to its dtype."""
    return rtn_unpack(rtn_pack(weight, bits, group_size))


@torch.no_grad()
def rtn_cells(weight: torch.Tensor, bits: int, group_size: int | None = 32,
              margin: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element, the interval (lower, upper) it can move in, every other element moving in
    its own, without changing `rtn_quantize`'s output: its rounding cell shrunk by `margin`
    steps at each side, inside its group's range, and zero width for the group's min and max
    (which set the grid). For building edits that quantization undoes by construction."""
    check_grid(bits, group_size)
    groups, n = _groups(weight, group_size)
    lo, step = _grid(groups, bits)
    hi = groups.amax(-1, keepdim=True)
    k = torch.round((groups - lo) / step)
    lower = torch.maximum(lo + step * (k - 0.5 + margin), lo)
    upper = torch.minimum(lo + step * (k + 0.5 - margin), hi)
    fixed = (groups == lo) | (groups == hi)
    lower, upper = torch.where(fixed, groups, lower), torch.where(fixed, groups, upper)
    return (_ungroup(torch.minimum(lower, groups), n, weight),
            _ungroup(torch.maximum(upper, groups), n, weight))


def quantized_weights(model: nn.Module, embeddings: bool = False) -> dict[str, nn.Parameter]:
    """Name -> parameter for each 2-D weight a quantizer takes (the linear layers; the input
    and output embeddings only with `embeddings`, as GPTQ / AWQ / bitsandbytes leave them)."""
    skip = set() if embeddings else {
        id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m is not None}
    return {n: p for n, p in model.named_parameters() if p.ndim == 2 and id(p) not in skip}
