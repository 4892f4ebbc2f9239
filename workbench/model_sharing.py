"""Holding a tensor once when several loaded models share it: an audit's edit and oracle differ
from the original in a few tensors (or none), and every tensor they leave unchanged is the
original's own. For models that are only read afterwards: training one in place would change
the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.models import Subject, config_dict, fork_module
from workbench.placement import spread


@torch.no_grad()
def share_unchanged(base: Subject, other: Subject) -> int:
    """Point every parameter of `other` that equals `base`'s (same name, shape, dtype, device,
    values) at `base`'s tensor, so that an edit that changed a few blocks holds only those, and
    return the bytes no longer held twice. For models that are only read afterwards (an audit):
    training either one in place would change both. Ties inside `other` (a tied head) follow."""
    pb = dict(base.model.named_parameters())
    swap: dict[int, nn.Parameter] = {}
    for name, p in other.model.named_parameters():
        q = pb.get(name)
        if (q is not None and q is not p and q.shape == p.shape and q.dtype == p.dtype
                and q.device == p.device and torch.equal(q, p)):
            swap[id(p)] = q
    freed = {id(p): p.numel() * p.element_size() for p in other.model.parameters()
             if id(p) in swap}
    for mod in other.model.modules():
        for key, p in list(mod.named_parameters(recurse=False)):
            if id(p) in swap:
                mod.register_parameter(key, swap[id(p)])
    return sum(freed.values())



@torch.no_grad()
def load_over(over: Subject, path: Path, config: Any, weights: list[Path],
               dtype: torch.dtype | None) -> Any | None:
    """The checkpoint at `path` built over `over`'s model: a fork of its module tree that keeps
    every tensor the checkpoint holds unchanged as `over`'s own and reads only the changed ones,
    one tensor at a time. None (load it in full) unless it fits: the same config, plain
    safetensors weights of `over`'s dtype naming each of its tensors (a tied pair once) with the
    same shapes, no hooks on `over`, and `over` on one device."""
    from workbench.model_files import read_safetensors_plainly, safetensors_index

    want = dtype or torch.float32
    if (over.interventions or not weights or over.dtype != want or spread(over.model)
            or config_dict(config) != config_dict(over.model.config)):
        return None
    state = over.model.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}
    for name, t in state.items():
        aliases.setdefault(id(t), []).append(name)
    index = {w: safetensors_index(w) for w in weights}
    saved = [name for idx in index.values() for name in idx]
    covered = [id(state[n]) for n in saved if n in state]
    if (len(covered) != len(saved) or len(set(covered)) != len(covered)
            or set(covered) != set(aliases)
            or any(tuple(state[n].shape) != idx[n][1] for idx in index.values() for n in idx)):
        return None
    model = fork_module(over.model)
    model.config = config
    for w, idx in index.items():
        for name, t in read_safetensors_plainly(w, idx):
            old = state[name]
            t = t.to(device=old.device, dtype=old.dtype)
            if torch.equal(t, old):
                continue
            for alias in aliases[id(old)]:  # a tied pair stays tied
                module_name, _, key = alias.rpartition(".")
                module = model.get_submodule(module_name)
                if isinstance(old, nn.Parameter):
                    module.register_parameter(key, nn.Parameter(t, requires_grad=old.requires_grad))
                else:
                    module.register_buffer(key, t)
    if (path / "generation_config.json").exists():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(path)
    return model
