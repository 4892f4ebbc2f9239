"""The Unlearning Depth Score (UDS; Lee, Kim & Jo 2026, arXiv 2605.24614; reference code
github.com/gnueaj/unlearning-depth-score): how much of the forget knowledge M1's activations still
carry, measured inside M0 against a retain oracle by two-stage activation patching.

Stage 1 patches the oracle's block output (`resid_post`) into M0, one block at a time, at the
positions that predict the answer tokens (teacher-forced: the last prompt token and every answer
token but the last; the reference's "entity span", which is the whole answer of a fact here) and
takes the drop d1 of M0's mean log-prob per answer token. Blocks with d1 > tau are the fact's
knowledge-encoding (KE) blocks. Stage 2 does the same with M1 as the source (d2). On each KE block
the erasure ratio is clip(d2 / d1, 0, 1); a fact's UDS is their d1-weighted mean and the score
is the mean over the facts with a KE block (facts with none are left out, as in the reference).
1: M1's activations carry as little of the answer as the oracle's; 0: as much as M0's own.
Stage 1 reads "lacks the knowledge" only when the oracle shares M0's representation basis (the
reference's retain model is fine-tuned from the same base); an oracle trained from scratch drops
M0's answer at every block for being foreign, which makes every block KE.
`positions="entity"` (not in the paper) patches the prompt's entity tokens instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from probes.patch_engine import patch
from workbench.batching import encode
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject, check_compatible

Positions = Literal["answer", "entity"]
TAU = 0.05  # the reference's KE threshold, in nats of mean log-prob per answer token


@dataclass(frozen=True)
class DepthScore:
    """UDS with its per-fact, per-block evidence (drops in nats per answer token)."""

    score: float  # NaN when no fact has a KE block
    by_fact: np.ndarray  # [facts]: NaN for a fact without a KE block
    s1: np.ndarray  # [facts, layers]: drop of M0's answer with the oracle's block output patched
    s2: np.ndarray  # [facts, layers]: the same with M1's
    ke: np.ndarray  # [facts, layers] bool: s1 > tau
    ratio: np.ndarray  # [facts, layers]: clip(s2 / s1, 0, 1) on KE blocks, NaN elsewhere
    tau: float
    positions: str

    def by_layer(self) -> dict[str, np.ndarray]:
        """Per block: mean drops, the s1-weighted erasure ratio over the facts it encodes, and
        the fraction of facts for which it is a KE block."""
        w = np.where(self.ke, self.s1, 0.0)
        tot = w.sum(0)
        ratio = np.where(tot > 0, (w * np.nan_to_num(self.ratio)).sum(0)
                         / np.where(tot > 0, tot, 1.0), np.nan)
        return {"s1": self.s1.mean(0), "s2": self.s2.mean(0), "ratio": ratio,
                "ke_fraction": self.ke.mean(0)}


def aggregate(s1: np.ndarray, s2: np.ndarray, tau: float = TAU, positions: str = "answer"
              ) -> DepthScore:
    """UDS from the two stages' drops [facts, layers] (the reference's aggregation)."""
    ke = s1 > tau
    ratio = np.where(ke, np.clip(s2 / np.where(ke, s1, 1.0), 0.0, 1.0), np.nan)
    w = np.where(ke, s1, 0.0)
    has = ke.any(1)
    by_fact = np.where(has, (w * np.nan_to_num(ratio)).sum(1) / np.where(has, w.sum(1), 1.0),
                       np.nan)
    score = float(np.nanmean(by_fact)) if has.any() else float("nan")
    return DepthScore(score, by_fact, s1, s2, ke, ratio, tau, positions)


def patch_backs(m0: Subject, prompts: Sequence[str], answers: Sequence[str],
                entities: Sequence[str | None], positions: Positions) -> list[tuple[int, ...]]:
    """Per fact, the patched positions as `back` offsets of the patch engine (tokens before the
    last prompt token; negative: answer tokens)."""
    if positions not in ("answer", "entity"):
        raise WorkbenchError(f"positions must be 'answer' or 'entity', not {positions!r}")
    spans = list(entities) if positions == "entity" else None
    b = encode(m0.tokenizer, prompts, answers, spans=spans)
    last = b.last.tolist()
    if positions == "answer":
        n_ans = (b.lengths - b.last - 1).tolist()
        return [tuple(range(0, -n, -1)) for n in n_ans]
    out = []
    for f, row in enumerate(b.focus):
        pos = row.nonzero().flatten().tolist()
        if not pos:
            raise WorkbenchError(f"positions='entity': fact {f} ({prompts[f]!r}) names no entity "
                                 f"that occurs in its prompt; use positions='answer'")
        out.append(tuple(last[f] - p for p in pos))
    return out


def stage(m0: Subject, source: Subject, prompts: Sequence[str], answers: Sequence[str],
          backs: Sequence[tuple[int, ...]], batch_size: int = 256, progress: bool = False
          ) -> np.ndarray:
    """[facts, layers]: drop of M0's mean log-prob per answer token when `source`'s block output
    is patched into it at one block, at each fact's positions `backs`."""
    nf, n = len(prompts), m0.n_layers
    rows = [(f, tuple((L, "resid_post", k) for k in backs[f])) for L in range(n) for f in range(nf)]
    run = patch(m0, source, prompts, answers, rows, batch_size, progress=progress)
    b = encode(m0.tokenizer, prompts, answers)
    n_tok = (b.lengths - b.last - 1).numpy().astype(np.float64)
    patched = run.logprobs.reshape(n, nf) / n_tok
    return (run.base / n_tok)[:, None] - patched.T


def unlearning_depth_score(m0: Subject, m1: Subject, oracle: Subject, facts: FactSet,
                           tau: float = TAU, positions: Positions = "answer",
                           batch_size: int = 256, progress: bool = False) -> DepthScore:
    """UDS of M1 on the forget facts of `facts`: 1 = erased as deep as the oracle, 0 = intact."""
    check_compatible(m0, m1)
    check_compatible(m0, oracle)
    fs = facts.forget.require_nonempty("forget facts")
    prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
    backs = patch_backs(m0, prompts, answers, [f.entity for f in fs], positions)
    s1 = stage(m0, oracle, prompts, answers, backs, batch_size, progress)
    s2 = stage(m0, m1, prompts, answers, backs, batch_size, progress)
    return aggregate(s1, s2, tau, positions)
