"""Gather a flat [tokens, d] matrix of activations at one hook point from a list of texts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saes.hooks import check_hook
from workbench.capture import capture
from workbench.errors import WorkbenchError
from workbench.models import Subject

MAX_CHARS = 600  # texts are cut here (~130 tokens): long contexts cost time, not diversity


def token_mask(lengths: Tensor, width: int, skip_first: bool) -> Tensor:
    """[n, width] True at real (non-padding) tokens, optionally not at position 0."""
    pos = torch.arange(width, device=lengths.device)
    mask = pos[None, :] < lengths[:, None]
    if skip_first:
        mask &= pos[None, :] > 0
    return mask


@torch.no_grad()
def collect_activations(subject: Subject, texts: Sequence[str], hook: str,
                        max_tokens: int | None = None, skip_first: bool = True,
                        batch_size: int = 16, progress: bool = True,
                        ) -> Tensor:
    """[tokens, d] activations of every real token of `texts` at `hook`, padding dropped
    (texts of similar length are batched together, so rows are not in text order).

    Position 0 is skipped by default: in most LMs the first token is an attention sink whose
    residual norm is tens of times larger than any other, and an SAE trained on it wastes
    capacity (SAELens' evals likewise exclude special tokens). Stops after `max_tokens`."""
    layer, point = check_hook(subject.model, hook)
    texts = [t[:MAX_CHARS] for t in texts if t.strip()]
    if not texts:
        raise WorkbenchError("no texts to collect activations from")
    parts: list[Tensor] = []
    total = 0
    bar = tqdm(total=max_tokens or None, desc=f"activations {hook}", unit="tok",
               disable=not progress)
    # Batch texts of similar length (sorted within windows of 16 batches, so a `max_tokens`
    # cut still samples the whole length range): right padding then wastes little compute.
    window = 16 * batch_size
    texts = [t for w in range(0, len(texts), window)
             for t in sorted(texts[w:w + window], key=len)]
    for start in range(0, len(texts), batch_size):
        acts = capture(subject, texts[start:start + batch_size], [layer], [point],
                       position="all", batch_size=batch_size)
        h = acts.layer(layer, point)
        rows = h[token_mask(acts.lengths, h.shape[1], skip_first)].float()
        parts.append(rows)
        total += rows.shape[0]
        bar.update(rows.shape[0])
        if max_tokens is not None and total >= max_tokens:
            break
    bar.close()
    out = torch.cat(parts)
    return out[:max_tokens] if max_tokens is not None else out
