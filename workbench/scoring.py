"""Teacher-forced answer scores from one forward pass, with the vocabulary projection run only
where an answer token is predicted.

Most positions of a scoring batch are prompt tokens (a few-shot prefix, a mixed prompt), whose
logits nobody reads; projecting every position onto a 49k vocabulary and taking its log-softmax
held a [batch, positions, vocab] float tensor twice (about 1 GB at batch 64 and 80 positions on
SmolLM2) and was a fifth of the forward pass. Here the backbone runs once and the head runs on
the answer-predicting hidden states alone. HF models expose no "logits at these ragged
positions" option (`logits_to_keep` keeps one set of positions for the whole batch, which a
logits hook would misread), hence the few lines below. When something hooks the model's top
module, its backbone or its head (an output-suppressor, say), the full forward runs instead so
that every hook sees what it expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workbench.batching import Batch


@dataclass(frozen=True)
class AnswerScores:
    """Per row: summed answer log-prob, the first answer token's log-prob, and whether greedy
    decoding reproduces every answer token (teacher-forced); `cache` when one was asked for."""

    total: Tensor
    first: Tensor
    exact: Tensor
    cache: object | None = None


def _backbone(model: nn.Module) -> nn.Module | None:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) and base is not model else None


def _hooked(*mods: nn.Module | None) -> bool:
    return any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in mods)


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The model's backbone and output head when the head may run apart from the backbone (on
    chosen positions only): both exist and nothing hooks them or the model; else None."""
    inner, head = _backbone(model), model.get_output_embeddings()
    if inner is None or head is None or _hooked(model, inner, head):
        return None
    return inner, head


class _Scorer(nn.Module):
    """The model as a module whose forward returns answer scores (so `functional_call` can swap
    its parameters in: restored or quantized weights, the model itself untouched)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.lm = model

    def forward(self, b: Batch, use_cache: bool) -> AnswerScores:
        model = self.lm
        split = backbone_and_head(model)
        sel = b.answer_mask[:, :-1]
        kw = {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "use_cache": use_cache}
        if split is None:
            out = model(**kw)
            logits = out.logits[:, :-1][sel]
        else:
            out = split[0](**kw)
            logits = split[1](out.last_hidden_state[:, :-1][sel])
        return scores_at_answers(logits, b,
                                 getattr(out, "past_key_values", None) if use_cache else None)


def scores_at_answers(logits: Tensor, b: Batch, cache: object | None = None) -> AnswerScores:
    """Answer scores from the logits at `b`'s answer-predicting positions only
    ([n, vocab], in the row-major order of `b.answer_mask[:, :-1]`)."""
    sel = b.answer_mask[:, :-1]
    target = b.input_ids[:, 1:][sel]
    logp = torch.log_softmax(logits.float(), -1)
    tok = logp.gather(-1, target[:, None]).squeeze(-1)
    miss = (logits.argmax(-1) != target).float()
    counts = sel.sum(1)
    rows = torch.repeat_interleave(torch.arange(len(sel), device=sel.device), counts)
    total = torch.zeros(len(sel), dtype=torch.float32, device=sel.device)
    misses = torch.zeros_like(total)
    total.index_add_(0, rows, tok)
    misses.index_add_(0, rows, miss)
    # boolean indexing is row-major, and each row's first kept position is its last prompt
    # token, which predicts the answer's first token (`encode` refuses empty answers)
    first = tok[torch.cumsum(counts, 0) - counts]
    return AnswerScores(total, first, misses == 0, cache)


@torch.no_grad()
def answer_scores(model: nn.Module, b: Batch, params: dict[str, Tensor] | None = None,
                  use_cache: bool = False) -> AnswerScores:
    """Score the answers of batch `b` (built by `encode` with answers) under `model`, with
    `params` (names as in `model.named_parameters()`) swapped in when given."""
    scorer = _Scorer(model)
    if not params:
        return scorer(b, use_cache)
    return torch.func.functional_call(scorer, {f"lm.{k}": v for k, v in params.items()},
                                      (b, use_cache), strict=False)
