"""Quantization attack: quantize M1's weights and see whether the forgotten answers come back.

Unlearning that moves weights less than a quantizer's rounding step is undone by rounding: the
quantized M1 lands on the same grid points as the quantized M0 (Zhang et al., "Catastrophic
Failure of LLM Unlearning via Quantization", ICLR 2025: for unlearning with utility constraints,
4-bit quantization takes the retained forgotten knowledge from 21% to 83%). Round-to-nearest
(RTN) with per-group min-max scales at 8 and 4 bits (`workbench.rounding`), in groups of 32 by default
(llama.cpp's block size: the bundled model ships as 4-bit blocks of 32, which coarser groups do
not reproduce, costing it many of its facts); bitsandbytes NF4 / LLM.int8 join where it is
installed (the `quant` extra): on CUDA by default, on the CPU too with `bnb=True`. The same
quantizer runs on M0 (a quantizer that breaks M0 is not read) and on the oracle (the floor).

Memory: a quantizer packs each weight once into its compact form (RTN: integer codes, a byte
each, and a scale and offset per group: under a third of float32) and the weights are
de-quantized one layer at a time, as each layer runs (a `torch.nn.utils.parametrize`
parametrization on its module, removed afterwards, leaving the model's own parameters in place):
no full-precision quantized copy of the model ever exists, and the subjects' tensors are never
written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from probes.attack_common import (
    AttackThresholds,
    read_recovery,
    recovery_fraction,
    weight_attack_blocker,
)
from probes.base import Finding, ProbeContext, ProbeSpec
from probes.common import exact_match, gate, seed_all
from workbench.behavior import answer_logprobs
from workbench.facts import FactSet
from workbench.logs import quieter
from workbench.models import Subject
from workbench.rounding import check_grid, quantized_weights, rtn_pack, rtn_unpack


@dataclass(frozen=True)
class Quantizer:
    """A weight quantizer in two halves: `pack` (weight -> its compact quantized state) and
    `unpack` (state -> the de-quantized weight, a new tensor of the weight's shape and dtype).
    Called on a weight, it does both."""

    pack: Callable[[torch.Tensor], Any]
    unpack: Callable[[Any], torch.Tensor]

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return self.unpack(self.pack(weight))


@dataclass(frozen=True)
class QuantizationThresholds(AttackThresholds):
    """Recovery thresholds of `AttackThresholds`, plus when a quantizer counts as broken."""

    # a quantizer is broken (not read) when Q(M0) loses more than this retain or holdout accuracy
    broken_drop: float = 0.2


def rtn(bits: int, group_size: int | None = 32) -> Quantizer:
    """The RTN quantizer (`workbench.rounding`) at `bits` bits and groups of `group_size`
    (checked now)."""
    check_grid(bits, group_size)
    return Quantizer(lambda w: rtn_pack(w, bits, group_size), rtn_unpack)


def _bnb_quantizers(device: torch.device, bnb: bool | None) -> tuple[dict[str, Quantizer], str]:
    """bitsandbytes NF4 (blocks of 64) and LLM.int8 row-wise absmax, where they run: by default
    (`bnb=None`) only on CUDA, where a quantized model would be served; `bnb=True` also on the
    CPU (bitsandbytes 0.46 and later quantize there with the same functions)."""
    if bnb is False:
        return {}, "bitsandbytes off"
    if bnb is None and device.type != "cuda":
        return {}, (f"bitsandbytes quantizers skipped: the subjects run on {device.type}, not "
                    "CUDA (bnb=True runs them anyway)")
    try:
        with quieter("bitsandbytes"):
            import bitsandbytes.functional as bnbf
    except Exception as e:  # noqa: BLE001 (any import failure means: not available here)
        return {}, f"bitsandbytes quantizers skipped: it does not import ({type(e).__name__})"

    def nf4(w: torch.Tensor) -> tuple[Any, ...]:
        packed, state = bnbf.quantize_4bit(w.detach().half().contiguous(), blocksize=64,
                                           quant_type="nf4")
        return packed, state, w.dtype, w.shape

    def nf4_unpack(s: tuple[Any, ...]) -> torch.Tensor:
        return bnbf.dequantize_4bit(s[0], s[1]).to(s[2]).reshape(s[3])

    def int8(w: torch.Tensor) -> tuple[Any, ...]:
        cb, stats, _ = bnbf.int8_vectorwise_quant(w.detach().half().contiguous(), threshold=0.0)
        return cb, stats, w.dtype, w.shape

    def int8_unpack(s: tuple[Any, ...]) -> torch.Tensor:
        return bnbf.int8_vectorwise_dequant(s[0], s[1]).to(s[2]).reshape(s[3])

    out = {"bnb_nf4": Quantizer(nf4, nf4_unpack), "bnb_int8": Quantizer(int8, int8_unpack)}
    try:  # an old release, or a build without kernels for this device, fails here, not mid-run
        for q in out.values():
            q(torch.zeros(2, 64, device=device))
    except Exception as e:  # noqa: BLE001
        return {}, (f"bitsandbytes quantizers skipped: they do not run on {device.type} "
                    f"({type(e).__name__}: {str(e)[:80]})")
    return out, f"bitsandbytes NF4 and LLM.int8 included (on {device.type})"


def quantizers(bits: Sequence[int] = (8, 4), group_size: int | None = 32,
               device: torch.device | str = "cpu", bnb: bool | None = None
               ) -> tuple[dict[str, Quantizer], str]:
    """The quantizers by name (`rtn8`, `rtn4`, ..., and `bnb_nf4` / `bnb_int8` where
    bitsandbytes is installed: on CUDA by default, anywhere with `bnb=True`, never with
    `bnb=False`) and a note saying whether bitsandbytes is in."""
    out = {f"rtn{b}": rtn(b, group_size) for b in bits}
    extra, note = _bnb_quantizers(torch.device(device), bnb)
    return out | extra, note


def quantized_params(model: torch.nn.Module, quantizer: Callable[[torch.Tensor], torch.Tensor],
                     embeddings: bool = False) -> dict[str, torch.Tensor]:
    """Name -> quantized tensor for each weight of `quantized_weights`, all at once (for
    comparing two models' grids; the attack itself de-quantizes a layer at a time)."""
    return {n: quantizer(p) for n, p in quantized_weights(model, embeddings).items()}


class _Dequantized(torch.nn.Module):
    """A parametrization that ignores the weight it stands in for and returns its quantized
    state de-quantized, afresh at each use (nothing cached between layers)."""

    def __init__(self, state: Any, unpack: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.state, self.unpack = state, unpack

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.unpack(self.state)


@contextmanager
def quantized(model: torch.nn.Module, quantizer: Quantizer, embeddings: bool = False
              ) -> Iterator[torch.nn.Module]:
    """`model` running quantized while open: each weight of `quantized_weights` packed once,
    and de-quantized only while its module runs. On exit every module gets its own parameter
    object back, untouched (weights tied across modules stay tied)."""
    with torch.no_grad():
        swaps = {id(p): _Dequantized(quantizer.pack(p), quantizer.unpack)
                 for p in quantized_weights(model, embeddings).values()}
    owners = [(m, attr, id(p)) for m in model.modules()
              for attr, p in m.named_parameters(recurse=False) if id(p) in swaps]
    done: list[tuple[torch.nn.Module, str]] = []
    try:
        for m, attr, key in owners:
            parametrize.register_parametrization(m, attr, swaps[key], unsafe=True)
            done.append((m, attr))
        yield model
    finally:
        for m, attr in reversed(done):
            parametrize.remove_parametrizations(m, attr, leave_parametrized=False)


def _accuracies(subject: Subject, splits: dict[str, FactSet], quantizer: Quantizer | None,
                embeddings: bool, batch_size: int) -> dict[str, np.ndarray]:
    """Per-fact exact match on each split, of `subject` quantized (None: as it is, the
    battery's memoised answers, which the gate has already asked for)."""
    if quantizer is None:
        return {k: exact_match(subject, fs, batch_size) for k, fs in splits.items()}
    with quantized(subject.model, quantizer, embeddings):  # never memoised: not the model's own
        return {k: answer_logprobs(subject, [f.prompt for f in fs], [f.answer for f in fs],
                                   batch_size)[2] for k, fs in splits.items()}


def _quantization(ctx: ProbeContext, th: QuantizationThresholds, bits: Sequence[int] = (8, 4),
                  group_size: int | None = 32, embeddings: bool = False,
                  bnb: bool | None = None, batch_size: int = 64) -> Finding:
    m0, m1, facts, oracle = ctx.m0, ctx.m1, ctx.facts, ctx.oracle
    seed_all(ctx.seed)
    g = gate(m0, m1, facts, th, oracle=oracle)
    if g.blocker():
        return Finding("quantization", "inconclusive", g.blocker())
    blocked = weight_attack_blocker(m0, m1)
    if blocked:  # what the gate saw, so the finding still shows something
        return Finding("quantization", "inconclusive", blocked,
                       arrays={f"forget_none_{r}": exact_match(m, facts.forget).astype(np.int8)
                               for r, m in (("M0", m0), ("M1", m1))},
                       meta={"models": ["M0", "M1"], "quantizers": [], "seed": ctx.seed})
    qs, bnb_note = quantizers(bits, group_size, ctx.device, bnb)
    splits = {"forget": facts.forget} | {s: facts.split(s) for s in ("retain", "holdout")
                                         if len(facts.split(s))}
    models = {"M0": m0, "M1": m1} | ({"Mr": oracle} if oracle is not None else {})
    arrays: dict[str, np.ndarray] = {}
    acc: dict[tuple[str, str, str], float] = {}  # (quantizer or "none", model, split)
    todo = [(q, m) for q in ("none", *qs) for m in models]
    for qname, role in tqdm(todo, desc="quantize", disable=not ctx.progress):
        # quantized, only M0 needs every split (is the quantizer broken?); M1 and the oracle
        # are read on the forget split alone, half of the quantized passes on a real model
        need = splits if qname == "none" or role == "M0" else {"forget": splits["forget"]}
        hits = _accuracies(models[role], need, qs.get(qname), embeddings, batch_size)
        arrays[f"forget_{qname}_{role}"] = hits["forget"].astype(np.int8)
        acc.update({(qname, role, s): float(h.mean()) for s, h in hits.items()})
    scores: dict[str, float] = {f"acc_{s}_{q}_{m}": v for (q, m, s), v in acc.items()}
    per_q: dict[str, dict[str, float | bool]] = {}
    for q in qs:
        drop = max((acc["none", "M0", s] - acc[q, "M0", s] for s in splits if s != "forget"),
                   default=0.0)
        rec = recovery_fraction(acc[q, "M1", "forget"], acc["none", "M1", "forget"],
                                acc["none", "M0", "forget"], th.min_gap)
        floor = (recovery_fraction(acc[q, "Mr", "forget"], acc["none", "Mr", "forget"],
                                   acc["none", "M0", "forget"], th.min_gap)
                 if oracle is not None else float("nan"))
        per_q[q] = {"recovery": rec, "floor": floor, "m0_utility_drop": drop,
                    "broken": drop > th.broken_drop}
        scores |= {f"recovery_{q}": rec, f"floor_{q}": floor, f"m0_utility_drop_{q}": drop}
    names = list(qs)
    arrays["recovery"] = np.array([per_q[q]["recovery"] for q in names], dtype=float)
    arrays["floor"] = np.array([per_q[q]["floor"] for q in names], dtype=float)
    arrays["m0_utility_drop"] = np.array([per_q[q]["m0_utility_drop"] for q in names])
    reading, reason, best = _read(th, per_q, oracle is not None)
    if best is not None:
        scores["recovery"], scores["floor"] = per_q[best]["recovery"], per_q[best]["floor"]
    return Finding("quantization", reading, reason, scores, arrays,
                   meta={"quantizers": names, "broken": [q for q in names if per_q[q]["broken"]],
                         "best": best, "group_size": group_size, "embeddings": embeddings,
                         "bitsandbytes": bnb_note, "splits": list(splits),
                         "models": list(models), "n_facts": len(facts.forget),
                         "floor": "retrain oracle" if oracle is not None else "none",
                         "seed": ctx.seed})


def _read(th: QuantizationThresholds, per_q: dict[str, dict], has_oracle: bool
          ) -> tuple[str, str, str | None]:
    """Read the quantizers that keep M0 working; the one with most recovery over its floor
    decides (a suppression signature from any of them is one)."""
    ok = [q for q, r in per_q.items() if not r["broken"]]
    broken = [q for q in per_q if q not in ok]
    note = (f" ({', '.join(broken)} left out: quantizing M0 costs it more than "
            f"{th.broken_drop:.0%} retain/holdout accuracy)" if broken else "")
    if not ok:
        return ("inconclusive", "every quantizer breaks M0 (it loses more than "
                f"{th.broken_drop:.0%} retain/holdout accuracy): nothing to read", None)

    def over(q: str) -> float:
        r = per_q[q]
        f = r["floor"] if has_oracle and np.isfinite(r["floor"]) else 0.0
        return r["recovery"] - f if np.isfinite(r["recovery"]) else -np.inf

    best = max(ok, key=over)
    reading, reason = read_recovery(f"{best} quantization", per_q[best]["recovery"],
                                    per_q[best]["floor"] if has_oracle else None,
                                    "the oracle", th)
    if reading == "removal-consistent":  # a failed attack: the edit outgrew the grid
        reason += (" (the edit survives rounding: weak evidence, a suppressor larger than the "
                   "grid would too)")
    return reading, reason + note, best


PROBE = ProbeSpec("quantization", QuantizationThresholds, _quantization)


def quantization(m0: Subject, m1: Subject, facts: FactSet, oracle: Subject | None = None,
                 bits: Sequence[int] = (8, 4), group_size: int | None = 32,
                 embeddings: bool = False, bnb: bool | None = None, batch_size: int = 64,
                 seed: int = 0, progress: bool = False, device: str | None = None,
                 thresholds: QuantizationThresholds | None = None) -> Finding:
    """Quantize M0, M1 (and the oracle) at each bit width and read how much of the forgotten
    answers quantization brings back into M1, over what it brings back into the oracle."""
    return PROBE(ProbeContext(m0, m1, facts, oracle, seed, progress, device), thresholds,
                 bits=bits, group_size=group_size, embeddings=embeddings, bnb=bnb,
                 batch_size=batch_size)
