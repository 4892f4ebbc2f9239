"""Tokenise prompts (and answers) into right-padded batches with the positions the probes need.

Right padding keeps every real token at its own position (no position-id bookkeeping) and, with
causal attention, padding never influences a real token. Generation uses left padding instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """Right-padded token batch. `last` is each row's last prompt token; `answer_start` is the
    first answer token (== last + 1) when answers were appended, else -1; `lengths` real lengths."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    last: Int[Tensor, " batch"]
    answer_start: Int[Tensor, " batch"]
    answer_mask: Bool[Tensor, "batch pos"]  # True where the *target* at pos+1 is an answer token
    lengths: Int[Tensor, " batch"]
    # optional: the positions a training update may flow through (e.g. the entity's tokens)
    focus: Bool[Tensor, "batch pos"] | None = None

    def to(self, device: torch.device | str) -> Batch:
        focus = None if self.focus is None else self.focus.to(device)
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.last,
                                               self.answer_start, self.answer_mask,
                                               self.lengths)), focus=focus)

    def rows(self, idx: Tensor) -> Batch:
        """The rows `idx`, trimmed to their longest real length."""
        width = int(self.lengths[idx].max())
        focus = None if self.focus is None else self.focus[idx, :width]
        return Batch(self.input_ids[idx, :width], self.attention_mask[idx, :width],
                     self.last[idx], self.answer_start[idx], self.answer_mask[idx, :width],
                     self.lengths[idx], focus)


def _bos(tokenizer) -> list[int]:
    """Prefix the BOS token when the tokenizer's own encoding would (e.g. Llama-2, Gemma)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    return ids[: len(ids) - len(bare)] if ids[-len(bare):] == bare else []


def encode(tokenizer, prompts: Sequence[str], answers: Sequence[str] | None = None,
           device: torch.device | str = "cpu",
           spans: Sequence[str | None] | None = None) -> Batch:
    """Tokenise prompts (optionally followed by answers) into one right-padded batch; with
    `spans`, `focus` marks each prompt's tokens of its span text (see `span_mask`)."""
    if len(prompts) == 0:
        raise ValueError("no prompts to encode")
    if answers is not None and len(answers) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    prefix = _bos(tokenizer)
    rows, lasts, starts = [], [], []
    for i, p in enumerate(prompts):
        ids = prefix + tokenizer(p, add_special_tokens=False)["input_ids"]
        lasts.append(len(ids) - 1)
        if answers is not None:
            ans = tokenizer(answers[i], add_special_tokens=False)["input_ids"]
            if not ans:
                raise ValueError(f"answer {answers[i]!r} encodes to no tokens")
            starts.append(len(ids))
            ids = ids + ans
        else:
            starts.append(-1)
        rows.append(ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        if answers is not None:
            answer_mask[i, starts[i] - 1 : len(ids) - 1] = True
    lengths = mask.sum(1)
    focus = None if spans is None else span_mask(tokenizer, prompts, spans, width)
    return Batch(input_ids, mask, torch.tensor(lasts), torch.tensor(starts), answer_mask,
                 lengths, focus).to(device)


def span_mask(tokenizer, prompts: Sequence[str], spans: Sequence[str | None], width: int
              ) -> Bool[Tensor, "batch pos"]:
    """True at the tokens of each prompt that overlap the last occurrence of its `span` text
    (positions as laid out by `encode`, BOS included); a row whose span is None or absent from
    its prompt is all False. Needs a fast tokenizer (character offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("span_mask needs a fast tokenizer (offset mapping)")
    shift = len(_bos(tokenizer))
    out = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, (p, span) in enumerate(zip(prompts, spans, strict=True)):
        start = p.rfind(span) if span else -1
        if start < 0:
            continue
        end = start + len(span)
        offsets = tokenizer(p, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"]
        for j, (a, b) in enumerate(offsets):
            if a < end and b > start and shift + j < width:
                out[i, shift + j] = True
    return out


def last_true(mask: Bool[Tensor, "batch pos"]) -> Tensor:
    """Each row's last True position (a span's last token; the last position if none is True)."""
    return mask.shape[1] - 1 - mask.flip(1).int().argmax(1)


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Slices that cover range(n) in pieces of at most `batch_size`."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))
