"""Known-truth control edits that every analysis module is tested against.

- `output_only_suppressor`: a *suppressor by construction*. A forward hook on the unembedding
  (`lm_head`) pushes down the first tokens of the forget answers at every position whose prefix
  contains a forget trigger (the fact's entity, or its prompt when it has no entity). Every
  activation before the logits is bitwise identical to the original's, so the knowledge is
  provably still inside; only the output changes. It gates on a forget signal, as real
  suppressors do, so a retain question asked after a forget fact loses those tokens too.
- `late_blocks_suppressor`: a *weight* suppressor by construction. Only the last block(s) are
  fine-tuned (NPO on the forget answers, the retain answers kept), so every activation up to
  them is bitwise the original's and the knowledge is provably still read out of the stream;
  the weight attacks, unlike for a hook, apply to it.
- `name_cut_suppressor`: a *weight* suppressor at the other end. Only the input-embedding rows
  of the tokens that spell the forget people's names (and no other person's) change; every
  block's weights are the original's, so what the blocks store about those people is intact,
  and only the way in is cut.
- `in_cell_suppressor`: a *weight* suppressor that 4-bit rounding undoes by construction. Every
  weight a quantizer takes moves only inside its own round-to-nearest cell of the original's
  grid, so the quantized edit is bitwise the quantized original, which still answers: the
  extreme of the small-update unlearning that Zhang et al. (ICLR 2025) find quantization undoes.
- `identity_edit`: the original weights under a new name (nothing unlearned).
- `noise_edit`: heavy Gaussian weight noise (a damaged model, not an unlearned one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.edits import register_intervention
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject

DEFAULT_STRENGTH = 100.0  # logit units: far above any toy/SmolLM2 logit gap, so the token vanishes


def _lm_head(model: nn.Module) -> nn.Module:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise WorkbenchError(f"{type(model).__name__} has no output embedding (lm_head) to hook")
    return head


def triggered(input_ids: torch.Tensor, triggers: Sequence[Sequence[int]]) -> torch.Tensor:
    """[batch, pos] bool: True where some trigger sequence has ended at or before `pos`."""
    b, n = input_ids.shape
    hit = torch.zeros((b, n), dtype=torch.bool, device=input_ids.device)
    by_len: dict[int, list[Sequence[int]]] = {}
    for t in triggers:
        by_len.setdefault(len(t), []).append(t)
    for m, group in by_len.items():
        if m == 0 or m > n:
            continue
        windows = input_ids.unfold(1, m, 1)  # [b, n-m+1, m]
        pats = torch.tensor(group, device=input_ids.device)  # [k, m]
        match = (windows[:, :, None, :] == pats[None, None]).all(-1).any(-1)  # [b, n-m+1]
        hit[:, m - 1:] |= match
    return hit.cummax(dim=1).values


@register_intervention
@dataclass
class OutputSuppressor:
    """Forward hook on `lm_head`: subtract `strength` from `token_ids` wherever a trigger fired."""

    triggers: list[list[int]]
    token_ids: list[int]
    strength: float = DEFAULT_STRENGTH
    name: str = "output-suppressor"
    type: ClassVar[str] = "output_suppressor"

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        state: dict[str, torch.Tensor | None] = {"ids": None}
        head = _lm_head(model)

        def remember(_mod, args, kwargs):
            state["ids"] = kwargs.get("input_ids", args[0] if args else None)

        def suppress(_mod, _args, logits):
            ids = state["ids"]
            if ids is None or logits.ndim != 3 or logits.shape[0] != ids.shape[0]:
                return None  # a bare lm_head call (e.g. a logit lens): not the model's output
            k = logits.shape[1]
            if k > ids.shape[1]:
                return None
            fired = triggered(ids, self.triggers)[:, -k:]
            if not fired.any():
                return None
            penalty = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            penalty[torch.tensor(self.token_ids, device=logits.device)] = self.strength
            return logits - fired[..., None].to(logits.dtype) * penalty

        return [model.register_forward_pre_hook(remember, with_kwargs=True),
                head.register_forward_hook(suppress)]

    def save(self, directory: Path) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "strength": self.strength,
                "triggers": self.triggers, "token_ids": self.token_ids}

    @classmethod
    def load(cls, directory: Path, spec: dict[str, Any]) -> OutputSuppressor:
        return cls(triggers=[list(t) for t in spec["triggers"]],
                   token_ids=[int(i) for i in spec["token_ids"]],
                   strength=float(spec["strength"]), name=spec.get("name", cls.type))


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def output_only_suppressor(subject: Subject, facts_to_suppress: FactSet,
                           strength: float = DEFAULT_STRENGTH) -> Subject:
    """An edited subject that stops saying `facts_to_suppress` by changing only its logits."""
    facts_to_suppress.require_nonempty("facts to suppress")
    if strength <= 0:
        raise WorkbenchError(f"strength must be positive, got {strength}")
    tok = subject.tokenizer
    triggers: set[tuple[int, ...]] = set()
    tokens: set[int] = set()
    for f in facts_to_suppress:
        keys = (f.entity, " " + f.entity) if f.entity else (f.prompt,)
        for key in keys:
            ids = tuple(_ids(tok, key))
            if ids and (tok.unk_token_id is None or tok.unk_token_id not in ids):
                triggers.add(ids)
        answer = _ids(tok, f.answer)
        if answer:
            tokens.add(answer[0])
    iv = OutputSuppressor(triggers=sorted(map(list, triggers)), token_ids=sorted(tokens),
                          strength=float(strength))
    edited = subject.with_interventions(iv, source=f"{subject.source}+output-suppressor")
    edited.meta.update({"name": f"{subject.name}+output-suppressor",
                        "control": "output-only-suppressor"})
    return edited


def late_blocks_suppressor(subject: Subject, forget: FactSet, retain: FactSet, blocks: int = 1,
                           seed: int = 0, steps: int = 300) -> Subject:
    """A copy whose last `blocks` blocks (only) are fine-tuned with NPO until the forget answers
    are gone, with the retain answers' NLL kept; everything before them is the original's."""
    from workbench.operators import get_operator, make_config

    n = subject.n_layers
    if not 1 <= blocks <= n:
        raise WorkbenchError(f"blocks must be in 1..{n} for {subject.name}, got {blocks}")
    config = make_config("npo", {"layers": tuple(range(n - blocks, n)), "params": "block",
                                 "positions": "all", "preserve": 0.0, "rows": "none",
                                 "lr": 1e-2, "steps": steps}, seed=seed)
    edited = get_operator("npo").apply(subject, forget, retain, config).subject
    edited.source = f"{subject.source}+last{blocks}-suppressor"
    edited.meta.update({"name": f"{subject.name}+last{blocks}-suppressor",
                        "control": "late-blocks-suppressor", "blocks": blocks,
                        "chain": [], "base": subject.meta.get("base", subject.source)})
    return edited


@torch.no_grad()
def name_cut_suppressor(subject: Subject, forget: FactSet, others: FactSet,
                        mode: str = "zero") -> Subject:
    """A copy whose input-embedding rows of the tokens spelling the forget entities, and no
    entity of `others`, are zeroed (`mode="zero"`) or set to the mean row (`"mean"`). A tied
    output head is untied first, so the unembedding is the original's."""
    if mode not in ("zero", "mean"):
        raise WorkbenchError(f"name cut mode must be 'zero' or 'mean', got {mode!r}")
    tok = subject.tokenizer

    def tokens(facts: FactSet) -> set[int]:
        names = {f.entity for f in facts if f.entity}
        return {i for n in names for key in (n, " " + n) for i in _ids(tok, key)}

    cut = sorted(tokens(forget) - tokens(others))
    if not cut:
        raise WorkbenchError("no token spells only the forget entities: nothing to cut "
                             "(facts without `entity`, or names shared with other people)")
    edited = untied(subject)
    edited.source = f"{subject.source}+name-cut-{mode}"
    emb = edited.model.get_input_embeddings().weight
    emb[cut] = 0.0 if mode == "zero" else emb.mean(0, keepdim=True).expand(len(cut), -1)
    edited.meta.update({"name": f"{subject.name}+name-cut-{mode}", "control": "name-cut",
                        "cut_tokens": len(cut)})
    return edited


def _margins(model: nn.Module, batch: Any) -> torch.Tensor:
    """Per position: the logit of the next token minus the best other token's."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    t = batch.input_ids[:, 1:, None]
    return logits.gather(-1, t)[..., 0] - logits.scatter(-1, t, -torch.inf).amax(-1)


def in_cell_suppressor(subject: Subject, forget: FactSet, retain: FactSet, bits: int = 4,
                       group_size: int | None = 64, steps: int = 40, rate: float = 0.2,
                       margin: float = 2.0) -> Subject:
    """A copy whose quantizable weights (`workbench.rounding.quantized_weights`) stay inside
    the original's `bits`-bit RTN rounding cells (groups of `group_size`) while it stops
    answering `forget`: so RTN at that grid maps it back onto the quantized original exactly.

    Projected sign-gradient steps (each of `rate` x the cell's width, decaying to 0 over
    `steps`) push each forget answer token's logit `margin` below the best other token's and
    keep each retain answer's `margin` above it; the gradients are summed over row chunks that
    fit the backward memory budget. Deterministic (no sampling, no dropout): nothing to seed.
    Written here: no library moves weights inside a quantization grid."""
    from workbench.batching import encode
    from workbench.placement import backward_rows, token_width
    from workbench.rounding import quantized_weights, rtn_cells

    forget.require_nonempty("facts to forget")
    retain.require_nonempty("retain facts to keep")
    if steps < 1 or not 0 < rate <= 1:
        raise WorkbenchError(f"in-cell edit needs steps >= 1 and 0 < rate <= 1, got {steps}, "
                             f"{rate}")
    edited = subject.clone(source=f"{subject.source}+in-cell{bits}g{group_size}")
    model = edited.model
    model.requires_grad_(False)
    live = quantized_weights(model)
    cells = {n: rtn_cells(p, bits, group_size) for n, p in live.items()}
    for p in live.values():
        p.requires_grad_(True)
    chunks = []
    for sign, facts in ((1.0, forget), (-1.0, retain)):
        prompts, answers = [f.prompt for f in facts], [f.answer for f in facts]
        rows = backward_rows(edited, token_width(edited, prompts, answers), len(facts))
        chunks += [(sign, len(facts), encode(edited.tokenizer, prompts[i:i + rows],
                                             answers[i:i + rows], device=edited.device))
                   for i in range(0, len(facts), rows)]
    model.eval()
    try:
        for i in range(steps):
            model.zero_grad(set_to_none=True)
            for sign, n, batch in chunks:  # hinge: forget margins under -m, retain over +m
                mask = batch.answer_mask[:, :-1]
                hinge = torch.relu(margin + sign * _margins(model, batch)) * mask
                (hinge.sum() / n).backward()
            with torch.no_grad():
                for name, p in live.items():
                    lo, hi = cells[name]
                    if p.grad is not None:
                        p.sub_(p.grad.sign() * (hi - lo) * rate * (1 - i / steps))
                        p.copy_(torch.minimum(torch.maximum(p, lo), hi))
    finally:
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    edited.meta.update({"name": f"{subject.name}+in-cell", "control": "in-cell",
                        "bits": bits, "group_size": group_size, "steps": steps, "rate": rate})
    return edited


def identity_edit(subject: Subject) -> Subject:
    """The original weights (shared, not copied) under an edited subject's name."""
    edited = subject.with_interventions(source=f"{subject.source}+identity")
    edited.meta.update({"name": f"{subject.name}+identity", "control": "identity"})
    return edited


@torch.no_grad()
def noise_edit(subject: Subject, scale: float = 3.0, seed: int = 0) -> Subject:
    """A copy with Gaussian noise of `scale` x each weight tensor's std added (a damaged model:
    on the toy world the default scale leaves every split near or below chance, a scale of 1
    costs only a little; `bench/noise_edit.py` writes each scale's accuracies to
    `bench/results/noise_edit.json`)."""
    if scale < 0:
        raise WorkbenchError(f"noise scale must be non-negative, got {scale}")
    edited = subject.clone(source=f"{subject.source}+noise{scale:g}")
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for _, p in edited.model.named_parameters():
        if id(p) in seen:  # tied embeddings: noise once
            continue
        seen.add(id(p))
        ref = p.float().std() if p.numel() > 1 else p.float().abs().mean()
        if not torch.isfinite(ref) or ref == 0:
            ref = p.float().abs().mean()
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        p.add_((noise * scale * ref).to(device=p.device, dtype=p.dtype))
    edited.meta.update({"name": f"{subject.name}+noise{scale:g}", "control": "noise"})
    return edited


# ----- fine-tuned controls (each a short run of the operators' training loop) ------------------

def fine_tune(subject: Subject, forget: FactSet, learn: FactSet, overrides: dict[str, Any],
          loss: str = "nll", reference: Subject | None = None, name: str = "tuned",
          seed: int = 0) -> Subject:
    """A copy of `subject` fine-tuned on `learn` (NLL of its answers, or with `loss="kl"` the KL
    to `reference`'s answer distributions on `learn`), stopping by the operators' rule on
    `forget` accuracy (`stop_forget_acc`, None: never). Only what `overrides` selects trains."""
    from workbench.operators.training import (
        FactTensors,
        TrainingConfig,
        answer_kl,
        answer_nll,
        reference_answer_logits,
        train,
    )

    learn.require_nonempty(f"facts to learn for {name}")
    config = TrainingConfig(**({"seed": seed, "rows": "none", "preserve": 0.0,
                                "positions": "all", "eval_every": 5} | overrides))
    edited = subject.clone(source=f"{subject.source}+{name}")
    lt = FactTensors.of(edited, learn, "all")
    ref = reference_answer_logits((reference or subject).model, lt) if loss == "kl" else None

    def step(model: nn.Module, _fi: torch.Tensor, ri: torch.Tensor) -> torch.Tensor:
        if ref is not None:
            return answer_kl(model, lt.rows(ri), ref, ri)
        return answer_nll(model, lt.rows(ri))

    train(edited, forget, learn, config, step, what=name)
    edited.meta.update({"name": f"{subject.name}+{name}", "control": name})
    return edited


def untied(subject: Subject) -> Subject:
    """A copy whose output head has its own weights (a tied head would move the inputs too)."""
    edited = subject.clone()
    model = edited.model
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and head.weight is emb.weight:
        head.weight = nn.Parameter(emb.weight.detach().clone())
        model.config.tie_word_embeddings = False
    return edited


def relabelled(facts: FactSet, answer: Any, tag: str) -> FactSet:
    """`facts` with each answer replaced by `answer(fact)` (ids tagged, so they stay unique)."""
    from dataclasses import replace

    return FactSet(tuple(replace(f, id=f"{f.id}:{tag}", answer=answer(f), split="retain")
                         for f in facts), f"{facts.name}:{tag}")


def wrong_answers(facts: FactSet, pool: FactSet, seed: int = 0) -> FactSet:
    """`facts` with each answer swapped for another answer of the same relation in `pool`."""
    import random

    rng = random.Random(seed)
    values: dict[str, list[str]] = {}
    for f in pool:
        values.setdefault(f.relation or "", []).append(f.answer)

    def other(f) -> str:
        choices = sorted({a for a in values.get(f.relation or "", []) if a != f.answer})
        if not choices:
            raise WorkbenchError(f"no other answer for relation {f.relation!r} to mislabel {f.id}")
        return rng.choice(choices)

    return relabelled(facts, other, "wrong")


def refusal_answer(tokenizer: Any) -> str:
    """" I don't know" where the vocabulary spells it, else the end-of-sequence token."""
    text = " I don't know"
    ids = _ids(tokenizer, text)
    if ids and (tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids):
        return text
    return " " + tokenizer.eos_token if tokenizer.eos_token else text
