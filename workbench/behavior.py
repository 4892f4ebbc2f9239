"""Behaviour: per-fact greedy answer correctness and answer log-probability, batched."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from workbench.batching import chunks, encode
from workbench.facts import FactSet
from workbench.models import Subject, hidden_of
from workbench.placement import rows_per_batch
from workbench.scoring import answer_scores

_PUNCT = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lower-case, strip accents and punctuation, collapse whitespace."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def is_match(generated: str, answer: str) -> bool:
    """The generated continuation starts with the answer, up to normalisation, on a word edge."""
    g, a = normalize(generated), normalize(answer)
    return bool(a) and (g == a or g.startswith(a + " "))


@dataclass(frozen=True)
class FactResult:
    id: str
    split: str
    prompt: str
    answer: str
    generated: str
    correct: bool
    logprob: float  # sum of the answer tokens' log-probabilities
    first_logprob: float  # log-probability of the answer's first token


def answer_logprobs(subject: Subject, prompts: Sequence[str], answers: Sequence[str],
                    batch_size: int = 32, resid_out: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher-forced (sum log-prob, first-token log-prob, exact greedy match) per prompt.
    Rows are batched in order of length (less padding to compute), results in input order.

    `resid_out`, a float32 array [n_layers, n prompts, d_model], receives every block's output
    at each row's last prompt token from the same pass: what `capture` gives on the prompts
    alone, since the answer tokens come after it."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))
    batch_size = rows_per_batch(subject, prompts, batch_size, answers)
    total, first, exact = (np.zeros(len(prompts), np.float32), np.zeros(len(prompts), np.float32),
                           np.zeros(len(prompts), bool))
    for sl in chunks(len(order), batch_size):
        rows = order[sl]
        b = encode(subject.tokenizer, [prompts[i] for i in rows], [answers[i] for i in rows],
                   device=subject.device)
        handles = [] if resid_out is None else _keep_last(subject, b, rows, resid_out)
        try:
            s = answer_scores(subject.model, b)
        finally:
            for h in handles:
                h.remove()
        total[rows], first[rows], exact[rows] = (s.total.cpu().numpy(), s.first.cpu().numpy(),
                                                 s.exact.cpu().numpy())
    return total, first, exact


def _keep_last(subject: Subject, b, rows: list[int], out: np.ndarray) -> list:
    """Hooks writing each block's output at `b`'s last prompt tokens into `out[:, rows]`."""
    at = torch.arange(len(rows), device=b.last.device)

    def keep(i: int):
        def hook(_m, _a, output):
            out[i, rows] = hidden_of(output)[at, b.last].float().cpu().numpy()
        return hook

    return [blk.register_forward_hook(keep(i)) for i, blk in enumerate(subject.layers())]


@torch.no_grad()
def greedy_continuations(subject: Subject, prompts: Sequence[str], max_new_tokens: int = 8,
                         batch_size: int = 32) -> list[str]:
    """Greedy continuations of each prompt (left-padded batched generation)."""
    tok = subject.tokenizer
    out: list[str] = []
    batch_size = rows_per_batch(subject, prompts, batch_size, extra=max_new_tokens)
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for sl in chunks(len(prompts), batch_size):
            enc = tok(list(prompts[sl]), return_tensors="pt", padding=True).to(subject.device)
            gen = subject.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = old_side
    return out


def greedy_correct(subject: Subject, prompts: Sequence[str], answers: Sequence[str],
                   exact: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """`evaluate`'s correctness from teacher-forced exact matches (`answer_logprobs`' third
    array): a row whose greedy decoding reproduces the answer is correct as it stands; only the
    others are generated (answer length + 2 tokens) and matched after normalisation."""
    correct = np.asarray(exact, bool).copy()
    miss = np.flatnonzero(~correct)
    if len(miss):
        n_tok = max(len(subject.tokenizer(answers[i], add_special_tokens=False)["input_ids"])
                    for i in miss)
        gens = greedy_continuations(subject, [prompts[i] for i in miss], n_tok + 2, batch_size)
        correct[miss] = [is_match(g, answers[i]) for g, i in zip(gens, miss, strict=True)]
    return correct


def evaluate(subject: Subject, facts: FactSet, batch_size: int = 32, generate: bool = True,
             use_paraphrases: bool = False) -> list[FactResult]:
    """Per-fact results. With `generate=False` correctness is the exact teacher-forced greedy
    match (one forward pass, used inside training loops); otherwise greedy generation with
    normalised matching. With `use_paraphrases`, every paraphrase is scored as its own row."""
    facts.require_nonempty()
    rows = [(f, f.prompt) for f in facts]
    if use_paraphrases:
        rows = [(f, p) for f in facts for p in f.paraphrases]
    prompts = [p for _, p in rows]
    answers = [f.answer for f, _ in rows]
    total, first, exact = answer_logprobs(subject, prompts, answers, batch_size)
    if generate:
        n_tok = max(len(subject.tokenizer(a, add_special_tokens=False)["input_ids"])
                    for a in answers)
        gens = greedy_continuations(subject, prompts, n_tok + 2, batch_size)
        correct = [is_match(g, a) or bool(e) for g, a, e in zip(gens, answers, exact)]
    else:
        gens = [""] * len(rows)
        correct = [bool(e) for e in exact]
    return [FactResult(f.id, f.split, p, f.answer, g, c, float(t), float(fl))
            for (f, p), g, c, t, fl in zip(rows, gens, correct, total, first)]


def summarize(results: Sequence[FactResult]) -> dict[str, dict[str, float]]:
    """Accuracy (0..1), mean answer log-prob and count per split, in canonical split order."""
    from workbench.facts import SPLITS

    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        rs = [r for r in results if r.split == split]
        if rs:
            out[split] = {"accuracy": float(np.mean([r.correct for r in rs])),
                          "logprob": float(np.mean([r.logprob for r in rs])),
                          "n": len(rs)}
    return out


def accuracy_by_split(subject: Subject, facts: FactSet, **kw) -> dict[str, dict[str, float]]:
    """`evaluate` then `summarize`: what `workbench eval` prints."""
    return summarize(evaluate(subject, facts, **kw))


def results_table(results: Sequence[FactResult]) -> list[dict]:
    return [asdict(r) for r in results]
