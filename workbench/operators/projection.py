"""Keeping fine-tuning updates out of the input directions that retain facts and ordinary prose
use (`TrainingConfig.preserve`, after AlphaEdit): each linear layer's weight change dW becomes
dW P with P = lam (C + lam I)^-1, C the second moment of the layer's inputs over those texts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workbench.batching import Batch, chunks, encode
from workbench.corpus import readable_prose
from workbench.errors import WorkbenchError
from workbench.models import Subject
from workbench.operators.entity_rows import EntityRows


@torch.no_grad()
def input_projectors(model: nn.Module, modules: dict[str, nn.Module], sources: list[Batch],
                     preserve: float, batch_size: int = 32) -> dict[nn.Linear, Tensor]:
    """Per linear layer inside `modules`: P = lam (C + lam I)^-1, C the second moment of its
    inputs over every real token of `sources` (see `TrainingConfig.preserve`)."""
    if preserve <= 0:
        raise WorkbenchError(f"preserve must be > 0, got {preserve}")
    linears = [m for mod in modules.values() for m in mod.modules() if isinstance(m, nn.Linear)]
    moments = {m: torch.zeros(m.in_features, m.in_features, dtype=torch.float64,
                              device=m.weight.device) for m in linears}
    count = [0]
    real: dict[str, Tensor] = {}

    def grab(mod: nn.Module, args: tuple) -> None:
        x = args[0][real["mask"]].double()
        moments[mod] += x.T @ x

    handles = [m.register_forward_pre_hook(grab) for m in linears]
    try:
        for src in sources:
            for sl in chunks(src.input_ids.shape[0], batch_size):
                b = src.rows(torch.arange(sl.start, sl.stop))
                real["mask"] = b.attention_mask.bool()
                count[0] += int(real["mask"].sum())
                model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for m, c in moments.items():
        c = c / max(count[0], 1)
        lam = preserve * float(torch.trace(c)) / c.shape[0]
        eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
        out[m] = (lam * torch.linalg.inv(c + lam * eye)).to(m.weight.dtype)
    return out


def prose_batches(subject: Subject, n: int) -> list[Batch]:
    """`n` texts of ordinary prose as one batch ([] when n is 0 or the tokenizer reads no
    English)."""
    prose = readable_prose(subject.tokenizer, n, max_chars=300) if n > 0 else []
    return [encode(subject.tokenizer, prose, device=subject.device)] if prose else []


def projected_step(opt: torch.optim.Optimizer, proj: dict[nn.Linear, Tensor],
                   rows: EntityRows | None = None) -> None:
    """`opt.step()`, then each projected layer's weight change dW becomes dW P (and each entity
    row's change is scaled by its own factor)."""
    before = {m: m.weight.detach().clone() for m in proj}
    rows_before = rows.delta.detach().clone() if rows is not None else None
    opt.step()
    with torch.no_grad():
        for m, p in proj.items():
            m.weight.copy_(before[m] + (m.weight - before[m]) @ p)
    if rows is not None:
        rows.constrain(rows_before)
