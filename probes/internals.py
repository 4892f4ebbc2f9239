"""One prompt, two models: what the dashboard's Internals page shows of M0 against M1.

`compare_prompt` reads both models on one prompt: the logit lens of each at every layer and
token (`probes.logit_lens`' unembedding), M1's answer log-prob with M0's `resid_post` patched in
at each (layer, token) as the share of the M0 - M1 gap it recovers (`probes.patch_engine`), the
per-layer relative difference of their residual streams, and residual / attention-output norms.
`patched_predictions` shows what M1 says with one such cell patched. Both return plain arrays:
drawing is the front end's business.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probes.logit_lens import _lens_logits
from probes.patch_engine import _attach, answer_logprob_from_logits, patch
from workbench.batching import encode
from workbench.capture import capture
from workbench.errors import LayerError, WorkbenchError
from workbench.models import Subject, check_compatible


@dataclass(frozen=True)
class LensGrid:
    """One model's logit lens on one prompt: per layer x prompt token, the top token and its
    probability, and the answer's first token's probability and rank (0 = top)."""

    top_tokens: np.ndarray  # [layer, pos] str
    top_prob: np.ndarray  # [layer, pos]
    answer_prob: np.ndarray  # [layer, pos]
    answer_rank: np.ndarray  # [layer, pos]


@dataclass(frozen=True)
class PromptComparison:
    """Everything `compare_prompt` measured (arrays are [layer, pos] unless said otherwise)."""

    prompt: str
    answer: str
    tokens: tuple[str, ...]  # the prompt's tokens as the models read them (BOS included)
    answer_token: str  # the answer's first token
    lens: dict[str, LensGrid]  # "M0", "M1"
    recovery: np.ndarray  # share of M1's answer log-prob gap to M0 that a patched cell closes
    logprob: dict[str, float]  # teacher-forced answer log-prob of "M0" and "M1"
    resid_diff: np.ndarray  # |h1 - h0| / |h0| of resid_post
    norms: dict[str, dict[str, np.ndarray]]  # model -> point -> [layer] at the last token

    @property
    def n_layers(self) -> int:
        return int(self.recovery.shape[0])


def _tokens(subject: Subject, ids: list[int]) -> tuple[str, ...]:
    return tuple(subject.tokenizer.decode([i]) for i in ids)


@torch.no_grad()
def _lens_grid(subject: Subject, resid: torch.Tensor, target: int) -> LensGrid:
    """Logit lens of `resid` [layer, pos, d] for the answer's first token `target`."""
    logits = _lens_logits(subject, resid.float().cpu().numpy()).cpu()  # [layer, pos, vocab]
    probs = torch.softmax(logits, -1)
    top_p, top_i = probs.max(-1)
    ans = logits[..., target]
    rank = (logits > ans[..., None]).sum(-1)
    names = np.array([[subject.tokenizer.decode([int(i)]) for i in row] for row in top_i])
    return LensGrid(names, top_p.numpy(), probs[..., target].numpy(), rank.numpy())


def _prompt_ids(subject: Subject, prompt: str, answer: str) -> tuple[list[int], int]:
    b = encode(subject.tokenizer, [prompt], [answer])
    last = int(b.last[0])
    return b.input_ids[0, : int(b.lengths[0])].tolist(), last


def compare_prompt(m0: Subject, m1: Subject, prompt: str, answer: str,
                   point: str = "resid_post") -> PromptComparison:
    """Read M0 and M1 on `prompt` (answer `answer`, with its leading space): see the module
    doc. The patching grid patches `point` at every layer and prompt token."""
    check_compatible(m0, m1)
    if not prompt.strip() or not answer.strip():
        raise WorkbenchError("the prompt and the answer must both be non-empty")
    ids, last = _prompt_ids(m0, prompt, answer)
    layers = list(range(m0.n_layers))
    acts = {name: capture(s, [prompt], layers, ["resid_post", "attn_out"], position="all")
            for name, s in (("M0", m0), ("M1", m1))}
    resid = {n: a.stack("resid_post")[:, 0, : last + 1] for n, a in acts.items()}
    target = ids[last + 1]
    lens = {n: _lens_grid(s, resid[n], target) for n, s in (("M0", m0), ("M1", m1))}
    h0, h1 = resid["M0"].float(), resid["M1"].float()
    diff = ((h1 - h0).norm(dim=-1) / (h0.norm(dim=-1) + 1e-8)).cpu().numpy()
    norms = {n: {p: a.stack(p)[:, 0, last].float().norm(dim=-1).cpu().numpy()
                 for p in ("resid_post", "attn_out")} for n, a in acts.items()}
    rows = [(0, ((L, point, back),)) for L in layers for back in range(last, -1, -1)]
    run = patch(m1, m0, [prompt], [answer], rows, method="full")
    lp1, lp0 = float(run.base[0]), float(run.source[0])
    gap = lp0 - lp1
    grid = run.logprobs.reshape(len(layers), last + 1)
    recovery = (grid - lp1) / gap if abs(gap) > 1e-6 else np.full_like(grid, np.nan)
    return PromptComparison(prompt, answer, _tokens(m0, ids[: last + 1]),
                            m0.tokenizer.decode([target]), lens, recovery,
                            {"M0": lp0, "M1": lp1}, diff, norms)


@dataclass(frozen=True)
class PatchedPrediction:
    """M1 with one cell of M0's activations patched in: its top next tokens, its greedy
    continuation and its answer log-prob, beside unpatched M1's."""

    layer: int
    position: int
    top: tuple[tuple[str, float], ...]
    continuation: str
    answer_logprob: float
    unpatched_top: tuple[tuple[str, float], ...]
    unpatched_continuation: str


@torch.no_grad()
def patched_predictions(m0: Subject, m1: Subject, prompt: str, answer: str, layer: int,
                        position: int, point: str = "resid_post", k: int = 5,
                        new_tokens: int = 6) -> PatchedPrediction:
    """M1 on `prompt` with M0's `point` activation at (`layer`, token `position`: 0 = the first,
    BOS included) patched in; the answer log-prob is teacher-forced on `answer`, as
    `compare_prompt`'s grid measures it."""
    check_compatible(m0, m1)
    ids, last = _prompt_ids(m0, prompt, answer)
    if not 0 <= layer < m1.n_layers:
        raise LayerError(f"layer {layer} out of range: {m1.name} has layers 0..{m1.n_layers - 1}")
    if not 0 <= position <= last:
        raise LayerError(f"position {position} out of range: the prompt has tokens 0..{last}")
    full = torch.tensor([ids], device=m1.device)
    src = capture(m0, [prompt], [layer], [point], position="all", answers=[answer])
    vec = src.layer(layer, point)[0, position].to(m1.device)

    def forward(x: torch.Tensor, patched: bool) -> torch.Tensor:
        plan = {(layer, point): (torch.tensor([0]), torch.tensor([position]), vec[None])}
        handles = _attach(m1.model, plan) if patched else []
        try:
            return m1.model(input_ids=x, use_cache=False).logits.float()
        finally:
            for h in handles:
                h.remove()

    def read(patched: bool) -> tuple[tuple[tuple[str, float], ...], str]:
        probs = torch.softmax(forward(full[:, : last + 1], patched)[0, -1], -1)
        top = torch.topk(probs, k)
        best = tuple((m1.tokenizer.decode([int(i)]), float(p))
                     for p, i in zip(top.values, top.indices, strict=True))
        seq = full[:, : last + 1]
        for _ in range(new_tokens):  # no KV cache: every pass re-reads the patched prompt
            nxt = forward(seq, patched)[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], 1)
        return best, m1.tokenizer.decode(seq[0, last + 1:].tolist())

    top, cont = read(True)
    plain_top, plain_cont = read(False)
    logits = forward(full, True)
    mask = torch.zeros_like(full, dtype=torch.float32)
    mask[0, last:] = 1.0
    lp = answer_logprob_from_logits(logits[:, :-1], full[:, 1:], mask[:, :-1])
    return PatchedPrediction(layer, position, top, cont, float(lp[0]), plain_top, plain_cont)
