"""Splice a function into an HF module tree at a TransformerLens-named hook point.

Written by hand (not TL's `HookedSAETransformer`) because interventions in the workbench are
plain forward hooks on the HF module tree (see `workbench.models.Intervention`): they then work
in `generate`, in every probe and in the nnsight / TL views built from the same tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workbench.capture import POINTS
from workbench.errors import LayerError
from workbench.models import decoder_layers, hidden_of, with_hidden

_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")

# fn(activations [batch, pos, d], absolute position ids [batch, pos]) -> new activations
SpliceFn = Callable[[Tensor, Tensor], Tensor]


def parse_hook(name: str) -> tuple[int, str]:
    """`blocks.{L}.hook_{point}` -> (L, point); a clear error for anything else."""
    m = _HOOK.match(name or "")
    if not m:
        raise LayerError(f"unsupported hook point {name!r}; expected 'blocks.<L>.hook_<point>' "
                         f"with point one of {POINTS}")
    return int(m.group(1)), m.group(2)


def check_hook(model: nn.Module, name: str) -> tuple[int, str]:
    """Parse `name` and check that its layer exists in `model`."""
    layer, point = parse_hook(name)
    n = len(decoder_layers(model))
    if not 0 <= layer < n:
        raise LayerError(f"hook {name!r}: layer {layer} out of range (the model has {n} layers)")
    return layer, point


def _submodule(block: nn.Module, point: str) -> nn.Module:
    if point == "mlp_out":
        return block.mlp
    for attr in ("self_attn", "attn", "attention"):
        if hasattr(block, attr):
            return getattr(block, attr)
    raise LayerError(f"cannot find the attention module of {type(block).__name__}")


def _positions(kwargs: dict, h: Tensor) -> Tensor:
    pos = kwargs.get("position_ids")
    if pos is None:
        pos = kwargs.get("cache_position")
    if pos is None:
        pos = torch.arange(h.shape[1], device=h.device)
    return pos.expand(h.shape[0], h.shape[1]) if pos.dim() < 2 or pos.shape[0] == 1 else pos


def splice(model: nn.Module, name: str, fn: SpliceFn) -> list[torch.utils.hooks.RemovableHandle]:
    """Replace the activation at hook `name` with `fn(activation, position_ids)`."""
    layer, point = check_hook(model, name)
    block = decoder_layers(model)[layer]
    state: dict[str, Tensor] = {}

    def pre(_mod, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        pos = _positions(kwargs, h)
        if point != "resid_pre":
            state["pos"] = pos
            return None
        new = fn(h, pos)
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    def post(_mod, _args, output):
        h = hidden_of(output)
        new = fn(h, state.get("pos", _positions({}, h)))
        return with_hidden(output, new)

    handles = [block.register_forward_pre_hook(pre, with_kwargs=True)]
    if point != "resid_pre":
        target = block if point == "resid_post" else _submodule(block, point)
        handles.append(target.register_forward_hook(post))
    return handles
