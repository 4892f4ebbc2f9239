"""Shared fine-tuning loop for weight-editing operators: answer-token losses over fact batches.

What trains is chosen by `TrainingConfig.params` (MLP / attention / whole blocks) and `layers`
(default: the early-middle blocks), plus, for entity-level forget sets, the embedding rows of the
forget entities' own tokens (`rows`, see `entity_rows`); norms and the rest stay frozen. By default
the updates are kept local to the forgotten entities in two ways: gradients enter the trained
modules only at the entity's tokens (`positions`), and each step is projected away from the input
directions that retain facts and ordinary prose use (`preserve`). Optional LoRA (peft)
adapters on the chosen linear layers are merged back, so the result is always a plain checkpoint.
The loop is deterministic on CPU for a given seed: fixed sampling generator, no dropout (the model
stays in eval mode), LoRA init drawn inside a forked RNG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor, nn

from workbench import progress
from workbench.batching import Batch, chunks, encode
from workbench.behavior import evaluate
from workbench.errors import LayerError, WorkbenchError
from workbench.facts import FactSet, phrasings, unnamed
from workbench.logs import quieter
from workbench.models import (
    Subject,
    decoder_layers,
    final_norm,
    hidden_of,
    untied_output_head,
    with_hidden,
)
from workbench.operators.base import OperatorConfig
from workbench.operators.entity_rows import EntityRows, RowsMode, rows_wanted
from workbench.operators.projection import input_projectors, projected_step, prose_batches
from workbench.options import option

ParamGroup = Literal["mlp", "attn", "block", "head", "norm"]
Positions = Literal["auto", "entity", "all"]
PARAM_GROUPS = get_args(ParamGroup)
TOUCHES = ("weights of the chosen blocks (default: the early-middle MLPs) and, for entity-level "
           "forget sets, the forget entities' embedding rows")
POSITIONS = get_args(Positions)
_GROUP_ATTRS = {"mlp": ("mlp", "feed_forward"), "attn": ("self_attn", "attn", "attention")}


@dataclass(frozen=True)
class TrainingConfig(OperatorConfig):
    """Fine-tuning knobs shared by the gradient operators (defaults reach the quality bars on the
    toy world and on SmolLM2's built-in facts without per-set tuning).

    `stop_forget_acc` sits below the retrain oracle's forget accuracy on the toy world, so a stop
    means "below chance". `positions=entity` keys the edit on the forgotten entities
    rather than on the relation or answer words other entities share (factual associations are
    looked up at the entity's tokens: Meng et al. 2022, ROME). `preserve` > 0: after every step a
    trained linear layer's weight change dW becomes dW P with P = lam (C + lam I)^-1, C the second
    moment of that layer's inputs over the retain facts' tokens and `preserve_texts` texts of
    ordinary prose (`workbench.corpus`; ROME estimates C on Wikipedia), lam = preserve * trace(C)
    / dim, so directions every entity shares (the relation, the template) are frozen and
    entity-specific ones stay free (AlphaEdit's null space, Fang et al. 2025, applied to
    unlearning updates); not applied to LoRA adapters (`projected_layers` in the training log
    says how many layers were). `rows=auto` trains the forget entities' embedding rows when the
    updates are entity-focused, no forget entity is the entity of a retain fact and the embedding
    is untied (then those rows are the forget entities' own parameters). `rows_lr`: a row moves
    only by its own entity's facts and Adam moves each coordinate by about lr per step, so the
    rate is set near a tenth of the rows' typical magnitude, for them to change within tens of
    steps."""

    lr: float = option(3e-4, "AdamW learning rate", gt=0)
    steps: int = option(100, "maximum optimiser steps", ge=1)
    batch_size: int = option(32, "forget facts (and retain facts) per step", ge=1)
    params: ParamGroup = option("mlp", "what trains in each chosen block (head: the output "
                                       "head, norm: the final norm; both ignore `layers`)")
    layers: tuple[int, ...] | None = option(None, "blocks that train (None: the early-middle "
                                                  "blocks, `default_layers`)")
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = option(1.0, "gradient clipping norm per parameter group (0: off)",
                                  ge=0)
    eval_every: int = option(1, "steps between forget/retain accuracy checks (0: never)", ge=0)
    stop_forget_acc: float | None = option(0.05, "stop once teacher-forced forget accuracy is "
                                                 "at most this (None: never)", ge=0, le=1)
    positions: Positions = option("auto", "where updates flow in: entity tokens only, all "
                                          "tokens, or auto (entity when every fact names its "
                                          "entity in its prompt)")
    preserve: float = option(0.1, "keep updates out of the retain inputs' directions with this "
                                  "strength (projected gradient descent; 0: off)", ge=0)
    preserve_texts: int = option(400, "prose texts that join the retain facts in the preserved "
                                      "statistics (skipped if the tokenizer reads no English)",
                                 ge=0)
    rows: RowsMode = option("auto", "also train the forget entities' embedding rows (auto: for "
                                    "entity-level forget sets with an untied embedding)")
    rows_lr: float = option(1e-2, "learning rate of those embedding rows", gt=0)
    lora_rank: int = option(0, "> 0: train LoRA adapters of this rank instead, merged "
                               "afterwards", ge=0)
    lora_alpha: float = option(16.0, "LoRA scaling alpha")


@dataclass
class TrainLog:
    """What happened during training: per-step losses and the periodic accuracy checks."""

    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    trainable: int = 0
    projected: int = 0  # linear layers whose updates were projected (`preserve`)
    rows: list[int] = field(default_factory=list)  # token ids whose embedding rows trained

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "stopped_early": self.stopped_early,
                "final_loss": round(self.losses[-1], 5) if self.losses else None,
                "trainable_params": self.trainable, "projected_layers": self.projected,
                "entity_rows": len(self.rows),
                "evals": self.evals}


# ----- what trains ------------------------------------------------------------------------------

def default_layers(n: int) -> tuple[int, ...]:
    """The early-middle blocks, from 10% to 20% of the depth: 3-6 of SmolLM2's 30, 0-1 of the toy
    model's 4. Factual associations are recalled by early-middle MLPs at the subject's tokens
    (Meng et al. 2022, ROME; MEMIT edits GPT-J's layers 3-8 of 28)."""
    lo = round(0.1 * n)
    return tuple(range(lo, max(lo, round(0.2 * n)) + 1))


def check_layers(subject: Subject, layers: tuple[int, ...] | None) -> list[int]:
    """The block indices to train (`default_layers` when None); out of range: `LayerError`."""
    n = subject.n_layers
    if layers is None:
        return list(default_layers(n))
    bad = [i for i in layers if not 0 <= int(i) < n]
    if bad or not layers:
        raise LayerError(f"layers {list(layers)} out of range: {subject.name} has blocks 0..{n - 1}")
    return sorted({int(i) for i in layers})


def _group_module(block: nn.Module, group: str) -> nn.Module:
    if group == "block":
        return block
    for attr in _GROUP_ATTRS[group]:
        if hasattr(block, attr):
            return getattr(block, attr)
    raise WorkbenchError(f"cannot find the {group} sub-module of {type(block).__name__}")


def trainable_modules(subject: Subject, params: str, layers: tuple[int, ...] | None,
                      model: nn.Module | None = None) -> dict[str, nn.Module]:
    """Qualified name -> module for the chosen group of each chosen block of `model`."""
    if params not in PARAM_GROUPS:
        raise WorkbenchError(f"params must be one of {PARAM_GROUPS}, got {params!r}")
    model = model if model is not None else subject.model
    names = {id(m): n for n, m in model.named_modules()}
    if params in _OUTSIDE_BLOCKS:  # one module after the blocks; `layers` does not apply
        mod = _OUTSIDE_BLOCKS[params](model)
        return {names[id(mod)]: mod}
    blocks = decoder_layers(model)
    out = {}
    for i in check_layers(subject, layers):
        mod = _group_module(blocks[i], params)
        out[names[id(mod)]] = mod
    return out


_OUTSIDE_BLOCKS = {"head": untied_output_head, "norm": final_norm}


def freeze_except(model: nn.Module, modules: dict[str, nn.Module]) -> list[nn.Parameter]:
    """Freeze every parameter of `model` but those of `modules`; return the trainable ones."""
    model.requires_grad_(False)
    params: list[nn.Parameter] = []
    for mod in modules.values():
        for p in mod.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def add_lora(model: nn.Module, modules: dict[str, nn.Module], rank: int, alpha: float,
             seed: int) -> nn.Module:
    """Wrap `model` with peft LoRA adapters of this rank on every linear layer inside `modules`
    (seeded initialisation); peft freezes every other parameter of `model`."""
    with quieter("bitsandbytes"):  # peft imports it when installed
        from peft import LoraConfig, get_peft_model

    targets = [f"{name}.{sub}" if sub else name for name, mod in modules.items()
               for sub, m in mod.named_modules() if isinstance(m, nn.Linear)]
    if not targets:
        raise WorkbenchError("LoRA found no linear layers in the chosen modules")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                     bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, cfg)


# ----- batches and answer log-probs -------------------------------------------------------------

@dataclass(frozen=True)
class FactTensors:
    """One fact set encoded once (prompt + answer, right-padded); `rows(idx)` slices a batch."""

    batch: Batch
    n: int

    @classmethod
    def of(cls, subject: Subject, facts: FactSet, positions: str = "all") -> FactTensors:
        spans = [f.entity for f in facts] if entity_positions(facts, positions) else None
        b = encode(subject.tokenizer, [f.prompt for f in facts], [f.answer for f in facts],
                   device=subject.device, spans=spans)
        return cls(b, len(facts))

    def rows(self, idx: Tensor) -> Batch:
        return self.batch.rows(idx)


def entity_positions(facts: FactSet, positions: str) -> bool:
    """Whether updates are confined to entity tokens for this fact set (see `positions`)."""
    if positions not in POSITIONS:
        raise WorkbenchError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions == "all":
        return False
    missing = unnamed(phrasings(facts, paraphrases=False))
    if missing and positions == "entity":
        raise WorkbenchError(f"positions=entity, but {len(missing)} fact(s) name no entity that "
                             f"occurs in their prompt (e.g. {missing[:3]}); use positions=all")
    return not missing


# The focus mask of the batch being forwarded, read by the hooks `focus_updates` installs.
_FOCUS: ContextVar[Tensor | None] = ContextVar("workbench_focus", default=None)


@contextmanager
def focus_updates(modules: dict[str, nn.Module]) -> Iterator[None]:
    """While active, gradients reach `modules` only through their outputs at the focus positions
    of the batch being forwarded (elsewhere the output is detached); no focus: no effect."""
    def hook(_mod: nn.Module, _args: Any, out: Any) -> Any:
        mask = _FOCUS.get()
        if mask is None or not torch.is_grad_enabled():
            return out
        t = hidden_of(out)
        return with_hidden(out, torch.where(mask[:, : t.shape[1], None], t, t.detach()))

    handles = [m.register_forward_hook(hook) for m in modules.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


LogProbs = tuple[Float[Tensor, "batch pos vocab"], Float[Tensor, "batch pos"]]  # noqa: F722


def answer_token_logprobs(model: nn.Module, b: Batch) -> LogProbs:
    """Log-softmax at each position and the log-prob of the next (target) token."""
    token = _FOCUS.set(b.focus)
    try:
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1]
    finally:
        _FOCUS.reset(token)
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = logp.gather(-1, b.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp, tok


def answer_nll(model: nn.Module, b: Batch) -> Tensor:
    """Mean negative log-likelihood over the answer tokens of the batch."""
    _, tok = answer_token_logprobs(model, b)
    m = b.answer_mask[:, :-1]
    return -(tok * m).sum() / m.sum()


def sequence_logprob(model: nn.Module, b: Batch) -> Float[Tensor, " batch"]:  # noqa: F722
    """Sum of answer-token log-probs per row (the sequence log-likelihood NPO compares)."""
    _, tok = answer_token_logprobs(model, b)
    return (tok * b.answer_mask[:, :-1]).sum(1)


@torch.no_grad()
def reference_sequence_logprob(model: nn.Module, ft: FactTensors, batch_size: int = 32) -> Tensor:
    """Frozen-reference sequence log-probs of every row, computed once before training."""
    out = [sequence_logprob(model, ft.rows(torch.arange(sl.start, sl.stop)))
           for sl in chunks(ft.n, batch_size)]
    return torch.cat(out)


@torch.no_grad()
def reference_answer_logits(model: nn.Module, ft: FactTensors,
                            batch_size: int = 32) -> list[Float[Tensor, "k vocab"]]:  # noqa: F722
    """Frozen-reference log-softmax at each row's answer positions (for a KL retain term)."""
    out: list[Tensor] = []
    for sl in chunks(ft.n, batch_size):
        b = ft.rows(torch.arange(sl.start, sl.stop))
        logp, _ = answer_token_logprobs(model, b)
        m = b.answer_mask[:, :-1]
        out += [logp[i][m[i]] for i in range(len(m))]
    return out


def answer_kl(model: nn.Module, b: Batch, ref: list[Tensor], idx: Tensor) -> Tensor:
    """Mean KL(reference || model) over the answer positions of the batch."""
    logp, _ = answer_token_logprobs(model, b)
    cur = logp[b.answer_mask[:, :-1]]
    r = torch.cat([ref[int(i)] for i in idx])
    return torch.sum(r.exp() * (r - cur), dim=-1).mean()


# ----- the loop ---------------------------------------------------------------------------------

class Sampler:
    """Deterministic epoch-wise shuffling of row indices (whole set when it fits one batch)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.bs = n, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> Tensor:
        if self.n <= self.bs:
            return torch.arange(self.n)
        if len(self.order) < self.bs:
            self.order += torch.randperm(self.n, generator=self.gen).tolist()
        idx, self.order = self.order[: self.bs], self.order[self.bs:]
        return torch.tensor(sorted(idx))


StepLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, forget idx, retain idx) -> loss


def _accuracy(subject: Subject, model: nn.Module, facts: FactSet, limit: int | None = None
              ) -> float:
    """Teacher-forced accuracy of `model` on `facts` (the first `limit` of them)."""
    view = Subject(model, subject.tokenizer, subject.source)
    rs = evaluate(view, facts.take(limit) if limit and len(facts) > limit else facts,
                  generate=False)
    return sum(r.correct for r in rs) / len(rs)


def _check(subject: Subject, model: nn.Module, forget: FactSet, retain: FactSet,
           config: TrainingConfig, log: TrainLog, bar: Any) -> bool:
    """The periodic accuracy check (forget every time, retain every 10th, for progress only);
    True once forget accuracy reaches `stop_forget_acc`."""
    acc = {"step": log.steps, "forget": _accuracy(subject, model, forget)}
    if len(retain) and len(log.evals) % 10 == 0:
        acc["retain"] = _accuracy(subject, model, retain, limit=64)
    log.evals.append(acc)
    shown = next((e["retain"] for e in reversed(log.evals) if "retain" in e), float("nan"))
    bar.set_postfix(loss=f"{log.losses[-1]:.3f}", forget=f"{acc['forget']:.0%}",
                    retain=f"{shown:.0%}")
    return config.stop_forget_acc is not None and acc["forget"] <= config.stop_forget_acc


def _report_step(what: str, log: TrainLog, total: int) -> None:
    """The step's loss, and forget / retain accuracy when this step checked them, to whoever
    listens (`workbench.progress`: the dashboard's live curves)."""
    last = log.evals[-1] if log.evals and log.evals[-1]["step"] == log.steps else {}
    progress.report("train", log.steps, total, operator=what, loss=log.losses[-1],
                    **{k: v for k, v in last.items() if k in ("forget", "retain")})


def train(subject: Subject, forget: FactSet, retain: FactSet, config: TrainingConfig,
          loss_fn: StepLoss, what: str = "train",
          setup: Callable[[nn.Module], None] | None = None,
          retain_tensors: FactTensors | None = None) -> TrainLog:
    """Fine-tune `subject.model` in place with `loss_fn`; the caller passes a clone.

    `setup(model)` runs after freezing and before the first step (e.g. to precompute reference
    log-probs on the untouched weights). Every `eval_every` steps the teacher-forced forget and
    retain accuracies are shown, and training stops once forget accuracy <= `stop_forget_acc`."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    log = TrainLog()
    mods = trainable_modules(subject, config.params, config.layers)
    model: nn.Module = subject.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.lora_rank > 0:
            model.requires_grad_(False)
            model = add_lora(model, mods, config.lora_rank, config.lora_alpha, config.seed)
            params = [p for p in model.parameters() if p.requires_grad]
        else:
            params = freeze_except(model, mods)
        log.trainable = sum(p.numel() for p in params)
        model.eval()  # no dropout: deterministic updates
        if setup is not None:
            setup(model)
        use_rows = rows_wanted(forget, retain, config.rows,
                               entity_positions(forget, config.positions), model)
        sources = []  # what `preserve` keeps updates away from (blocks unless LoRA; rows)
        if config.preserve > 0 and (config.lora_rank == 0 or use_rows):
            sources = ([retain_tensors.batch] if retain_tensors is not None else []) + \
                prose_batches(subject, config.preserve_texts)
        proj: dict[nn.Linear, Tensor] = {}
        if sources and config.lora_rank == 0:
            proj = input_projectors(model, mods, sources, config.preserve)
        log.projected = len(proj)
        rows = None
        if use_rows:
            rows = EntityRows.for_facts(model, subject.tokenizer, forget, sources, config.preserve)
            log.rows = rows.ids.tolist()
            log.trainable += rows.delta.numel()
        groups = [{"params": params, "lr": config.lr}]
        if rows is not None:
            groups.append({"params": [rows.delta], "lr": config.rows_lr})
        opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        fs = Sampler(len(forget), config.batch_size, config.seed)
        rs = Sampler(max(len(retain), 1), config.batch_size, config.seed + 1)
        bar = tqdm(range(1, config.steps + 1), desc=what, disable=None, leave=False)
        with focus_updates(mods), (rows.attached(model, _FOCUS.get) if rows is not None
                                   else nullcontext()):
            for step in bar:
                loss = loss_fn(model, fs.next(), rs.next())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm > 0:  # each group on its own: rows do not mute blocks
                    for g in groups:
                        torch.nn.utils.clip_grad_norm_(g["params"], config.max_grad_norm)
                projected_step(opt, proj, rows)
                log.losses.append(loss.item())
                log.steps = step
                stop = bool(config.eval_every) and (
                    step % config.eval_every == 0 or step == config.steps) \
                    and _check(subject, model, forget, retain, config, log, bar)
                if progress.active():
                    _report_step(what, log, config.steps)
                if stop:
                    log.stopped_early = step < config.steps
                    break
        bar.close()
    if config.lora_rank > 0:
        subject.model = model.merge_and_unload()
    if rows is not None:
        rows.merge(subject.model)
    subject.model.requires_grad_(False)
    subject.model.eval()
    log.seconds = time.perf_counter() - t0
    return log
