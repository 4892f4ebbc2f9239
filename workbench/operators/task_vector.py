"""Task-vector negation (Ilharco et al. 2023, "Editing Models with Task Arithmetic", ICLR).

Fine-tune a copy on the forget facts, take tau = finetuned - original, and return
original - alpha * tau. Only the trained modules change. Caveat: when the original already knows
the forget facts their loss is near zero, so tau is small and mostly "more confident", and its
negation can leave the argmax unchanged; `alpha` and `steps` set how far to push.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workbench.edits import Edit
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.operators.base import Operator, register_operator
from workbench.operators.training import (
    FactTensors,
    TrainingConfig,
    answer_nll,
    require_facts,
    train,
    trainable_modules,
)


@dataclass(frozen=True)
class TaskVectorConfig(TrainingConfig):
    """Fine-tune on forget (no early stop: accuracy only rises), then negate with `alpha`."""

    alpha: float = 3.0  # scale of the subtracted task vector (1.0 barely moves known facts)
    lr: float = 1e-3
    stop_forget_acc: float | None = None
    eval_every: int = 0
    preserve: float = 0.0


@register_operator
class TaskVector(Operator):
    name = "task_vector"
    family = "removal-intended"
    kind = "weights"
    touches = "weights of the chosen blocks (default: the early-middle MLPs)"
    config_cls = TaskVectorConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: TaskVectorConfig) -> Edit:
        started = time.perf_counter()
        require_facts(forget, None, self.name)
        tuned = subject.clone()
        ft = FactTensors.of(tuned, forget, config.positions)

        def step(model: nn.Module, fi: Tensor, ri: Tensor) -> Tensor:
            return answer_nll(model, ft.rows(fi))

        log = train(tuned, forget, retain, config, step, what=f"{self.name} (fine-tune)")
        negate(subject, tuned, config)
        edit = self.make_edit(subject, tuned, config, started, train_s=round(log.seconds, 3))
        edit.metrics["training"] = log.summary()
        return edit


@torch.no_grad()
def negate(original: Subject, tuned: Subject, config: TaskVectorConfig) -> None:
    """Turn `tuned` in place into original - alpha * (tuned - original) on the trained modules."""
    orig = dict(original.model.named_parameters())
    for prefix in trainable_modules(tuned, config.params, config.layers):
        mod = tuned.model.get_submodule(prefix)
        for name, p in mod.named_parameters():
            p0 = orig[f"{prefix}.{name}"]
            p.mul_(-config.alpha).add_(p0, alpha=1.0 + config.alpha)
