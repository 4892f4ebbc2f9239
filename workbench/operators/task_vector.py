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
    TOUCHES,
    FactTensors,
    TrainingConfig,
    answer_nll,
    require_facts,
    train,
    trainable_modules,
)
from workbench.options import option


@dataclass(frozen=True)
class TaskVectorConfig(TrainingConfig):
    """Fine-tune on forget (no early stop: accuracy only rises), then negate with `alpha`."""

    alpha: float = option(5.0, "scale of the subtracted task vector (1.0 barely moves known "
                               "facts)")
    lr: float = 1e-3
    stop_forget_acc: float | None = None
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
        negate(subject, tuned, config, rows=log.rows)
        edit = self.make_edit(subject, tuned, config, started, train_s=round(log.seconds, 3))
        edit.metrics["training"] = log.summary()
        return edit


@torch.no_grad()
def negate(original: Subject, tuned: Subject, config: TaskVectorConfig,
           rows: list[int] | None = None) -> None:
    """Turn `tuned` in place into original - alpha * (tuned - original) on the trained modules
    (and on the embedding rows `rows`, when the entity rows trained)."""
    if rows:
        ids = torch.tensor(rows)
        w, w0 = tuned.model.get_input_embeddings().weight, original.model.get_input_embeddings().weight
        w[ids] = (1.0 + config.alpha) * w0[ids] - config.alpha * w[ids]
    orig = dict(original.model.named_parameters())
    for prefix in trainable_modules(tuned, config.params, config.layers):
        mod = tuned.model.get_submodule(prefix)
        for name, p in mod.named_parameters():
            p0 = orig[f"{prefix}.{name}"]
            p.mul_(-config.alpha).add_(p0, alpha=1.0 + config.alpha)
