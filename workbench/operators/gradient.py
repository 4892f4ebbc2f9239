"""Removal-intended gradient operators: gradient ascent, GradDiff and NPO on answer tokens.

- `ga`: maximise the forget answers' negative log-likelihood (unbounded, so it relies on the
  early-stopping rule `stop_forget_acc` to stop before it wrecks the model).
- `graddiff`: ascent on forget plus weighted descent on retain (Liu et al. 2022; TOFU's GradDiff).
- `npo`: Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization:
  From Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868): DPO with only a
  dispreferred answer, loss = -(2/beta) log sigmoid(-beta (log p_theta - log p_ref)), whose
  gradient vanishes as the forget answers become unlikely (so it degrades slower than GA). The
  reference log-probs are fixed inputs, computed once before training: no second model copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

from workbench.edits import Edit
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.operators.base import Operator, register_operator, require_facts
from workbench.operators.training import (
    TOUCHES,
    FactTensors,
    StepLoss,
    TrainingConfig,
    answer_kl,
    answer_nll,
    reference_answer_logits,
    reference_sequence_logprob,
    sequence_logprob,
    train,
)
from workbench.options import option

RetainLoss = Literal["none", "nll", "kl"]
RETAIN_LOSSES = get_args(RetainLoss)


@dataclass(frozen=True)
class GAConfig(TrainingConfig):
    """Gradient ascent: the shared training knobs; with no retain term to hold the rest of the
    model in place, its updates are projected harder (smaller `preserve`)."""

    preserve: float = 0.05


@dataclass(frozen=True)
class GradDiffConfig(TrainingConfig):
    """GradDiff: loss = -forget_weight * NLL(forget) + retain_weight * NLL(retain)."""

    forget_weight: float = option(1.0, "weight of the ascent on the forget answers' NLL")
    retain_weight: float = option(1.0, "weight of the descent on the retain answers' NLL "
                                        "(0: none, then no retain facts are needed)", ge=0)


@dataclass(frozen=True)
class NPOConfig(TrainingConfig):
    """NPO; beta = 0.1 is the value Zhang et al. (2024) use throughout their TOFU experiments.
    NPO's gradient fades as the forget answers become unlikely, so it does not collapse between
    checks the way GA can: checking every 5th step skips four of every five evaluation passes."""

    beta: float = option(0.1, "inverse temperature of the NPO loss", gt=0)
    eval_every: int = 5
    retain_loss: RetainLoss = option("nll", "retain term: none, nll (NPO+RT) or kl (KL to the "
                                            "original on the retain answers)")
    retain_weight: float = option(1.0, "weight of the retain term (0: none)", ge=0)


class _GradientOperator(Operator):
    family = "removal-intended"
    kind = "weights"

    def needs_retain(self, config: TrainingConfig) -> bool:
        return False

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: TrainingConfig) -> Edit:
        started = time.perf_counter()
        require_facts(forget, retain if self.needs_retain(config) else None, self.name)
        edited = subject.clone()
        ft = FactTensors.of(edited, forget, config.positions)
        rt = FactTensors.of(edited, retain, config.positions) if len(retain) else None
        loss_fn, setup = self.loss(ft, rt, config)
        log = train(edited, forget, retain, config, loss_fn, what=self.name, setup=setup,
                    retain_tensors=rt)
        edit = self.make_edit(subject, edited, config, started, train_s=round(log.seconds, 3))
        edit.metrics["training"] = log.summary()
        return edit

    def loss(self, ft: FactTensors, rt: FactTensors | None, config):  # pragma: no cover
        raise NotImplementedError


@register_operator
class GradientAscent(_GradientOperator):
    name = "ga"
    touches = TOUCHES
    config_cls = GAConfig

    def loss(self, ft, rt, config):
        def step(model: nn.Module, fi: Tensor, ri: Tensor) -> Tensor:
            return -answer_nll(model, ft.rows(fi))

        return step, None


@register_operator
class GradDiff(_GradientOperator):
    name = "graddiff"
    touches = TOUCHES
    config_cls = GradDiffConfig

    def needs_retain(self, config) -> bool:
        return config.retain_weight > 0

    def loss(self, ft, rt, config):
        def step(model: nn.Module, fi: Tensor, ri: Tensor) -> Tensor:
            loss = -config.forget_weight * answer_nll(model, ft.rows(fi))
            if config.retain_weight > 0:
                loss = loss + config.retain_weight * answer_nll(model, rt.rows(ri))
            return loss

        return step, None


@register_operator
class NPO(_GradientOperator):
    name = "npo"
    touches = TOUCHES
    config_cls = NPOConfig

    def needs_retain(self, config) -> bool:
        return config.retain_loss != "none" and config.retain_weight > 0

    def loss(self, ft, rt, config):
        ref: dict[str, object] = {}

        def setup(model: nn.Module) -> None:
            # Reference = the weights before the first step (LoRA adapters start at zero).
            ref["forget"] = reference_sequence_logprob(model, ft)
            if config.retain_loss == "kl" and rt is not None:
                ref["retain"] = reference_answer_logits(model, rt)

        def step(model: nn.Module, fi: Tensor, ri: Tensor) -> Tensor:
            logratio = sequence_logprob(model, ft.rows(fi)) - ref["forget"][fi]
            loss = -(2.0 / config.beta) * F.logsigmoid(-config.beta * logratio).mean()
            if rt is not None and config.retain_weight > 0:
                if config.retain_loss == "nll":
                    loss = loss + config.retain_weight * answer_nll(model, rt.rows(ri))
                elif config.retain_loss == "kl":
                    kl = answer_kl(model, rt.rows(ri), ref["retain"], ri)
                    loss = loss + config.retain_weight * kl
            return loss

        return step, setup


def plain_step_loss(ft: FactTensors) -> StepLoss:
    """Plain fine-tuning loss on the same batch (the benchmark's baseline for NPO overhead)."""
    def step(model: nn.Module, fi: Tensor, ri: Tensor) -> Tensor:
        return answer_nll(model, ft.rows(fi))

    return step


__all__ = ["GAConfig", "GradDiffConfig", "NPOConfig", "GradientAscent", "GradDiff", "NPO",
           "plain_step_loss"]
