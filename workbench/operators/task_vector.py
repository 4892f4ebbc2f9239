"""Task-vector negation (Ilharco et al. 2023, "Editing Models with Task Arithmetic", ICLR).

Fine-tune a copy on the forget facts, take tau = finetuned - original, and return
original - alpha * tau. Only the trained modules change. Caveat: when the original already knows
the forget facts their loss is near zero, so tau is small and mostly "more confident", and its
negation can leave the argmax unchanged; `alpha` and `steps` set how far to push.

The negation's damage to other facts grows with alpha, so (as the gradient operators stop once
the forget facts are gone) the scale is the smallest of `alpha_grid` fractions of `alpha` at
which teacher-forced forget accuracy is at most `stop_forget_acc`, else `alpha` itself: one
forward pass over the forget facts per candidate, no retain or holdout facts read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workbench.behavior import evaluate
from workbench.edits import Edit
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.operators.base import Operator, register_operator, require_facts
from workbench.operators.training import (
    TOUCHES,
    FactTensors,
    TrainingConfig,
    answer_nll,
    train,
    trainable_modules,
)
from workbench.options import option


@dataclass(frozen=True)
class TaskVectorConfig(TrainingConfig):
    """Fine-tune on forget (no early stop: accuracy only rises), then negate with the smallest
    scale up to `alpha` that forgets (see the module docstring)."""

    alpha: float = option(5.0, "largest scale of the subtracted task vector (1.0 barely moves "
                               "known facts)", gt=0)
    alpha_grid: tuple[float, ...] = option((0.2, 0.4, 0.6, 0.8, 1.0),
                                           "fractions of alpha tried in order; the first whose "
                                           "forget accuracy reaches stop_forget_acc is kept")
    lr: float = 1e-3
    stop_forget_acc: float | None = option(0.05, "forget accuracy at which a smaller scale is "
                                                 "enough (None: always alpha)", ge=0, le=1)
    eval_every: int = 0


@register_operator
class TaskVector(Operator):
    name = "task_vector"
    family = "removal-intended"
    kind = "weights"
    touches = TOUCHES
    config_cls = TaskVectorConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: TaskVectorConfig) -> Edit:
        started = time.perf_counter()
        require_facts(forget, None, self.name)
        tuned = subject.clone()
        ft = FactTensors.of(tuned, forget, config.positions)
        rt = FactTensors.of(tuned, retain, config.positions) if len(retain) else None

        def step(model: nn.Module, fi: Tensor, ri: Tensor) -> Tensor:
            return answer_nll(model, ft.rows(fi))

        log = train(tuned, forget, retain, config, step, what=f"{self.name} (fine-tune)",
                    retain_tensors=rt)
        delta = task_vector(subject, tuned, config, rows=log.rows)
        scale, tried = pick_scale(tuned, forget, delta, config)
        edit = self.make_edit(subject, tuned, config, started, train_s=round(log.seconds, 3))
        edit.metrics["training"] = log.summary() | {"scale": scale, "scales_tried": tried}
        return edit


# (parameter, its original value, tau, the embedding rows it covers or None: the whole tensor)
Delta = list[tuple[Tensor, Tensor, Tensor, Tensor | None]]


@torch.no_grad()
def task_vector(original: Subject, tuned: Subject, config: TaskVectorConfig,
                rows: list[int] | None = None) -> Delta:
    """Per trained parameter of `tuned` (and the embedding rows `rows`, when the entity rows
    trained): the parameter, its original value and tau = tuned - original."""
    out: Delta = []
    orig = dict(original.model.named_parameters())
    for prefix in trainable_modules(tuned, config.params, config.layers):
        for name, p in tuned.model.get_submodule(prefix).named_parameters():
            p0 = orig[f"{prefix}.{name}"].detach()  # the original is never modified
            out.append((p, p0, p.detach() - p0, None))
    if rows:
        ids = torch.tensor(rows)
        w0 = original.model.get_input_embeddings().weight[ids].detach().clone()
        w = tuned.model.get_input_embeddings().weight
        out.append((w, w0, w[ids] - w0, ids))
    return out


@torch.no_grad()
def set_scale(delta: Delta, alpha: float) -> None:
    """Every parameter (or row) of `delta` becomes original - alpha * tau."""
    for p, p0, tau, ids in delta:
        if ids is None:
            p.copy_(p0 - alpha * tau)
        else:
            p[ids] = p0 - alpha * tau


def pick_scale(tuned: Subject, forget: FactSet, delta: Delta, config: TaskVectorConfig
               ) -> tuple[float, list[dict[str, float]]]:
    """Set `tuned` to the first scale of the grid that forgets (else `alpha`); returns it and
    each tried scale's teacher-forced forget accuracy."""
    tried: list[dict[str, float]] = []
    if config.stop_forget_acc is not None:
        for frac in config.alpha_grid:
            set_scale(delta, config.alpha * frac)
            acc = sum(r.correct for r in evaluate(tuned, forget, generate=False)) / len(forget)
            tried.append({"alpha": config.alpha * frac, "forget": acc})
            if acc <= config.stop_forget_acc:
                return config.alpha * frac, tried
    set_scale(delta, config.alpha)
    return config.alpha, tried
