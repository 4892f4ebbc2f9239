"""The quantization attack: the RTN quantizer's mechanics, and known truth on the toy world."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import snapshot

from apps.figures import draw
from probes.base import Finding
from probes.quantization import (
    QuantizationThresholds,
    quantization,
    quantized,
    quantized_params,
    quantizers,
    rtn,
)
from workbench.batching import encode
from workbench.behavior import answer_logprobs
from workbench.controls import identity_edit, in_cell_suppressor, output_only_suppressor
from workbench.rounding import rtn_cells, rtn_pack, rtn_quantize
from workbench.scoring import answer_scores


def _weight(rows: int = 6, cols: int = 96, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=gen) * torch.linspace(0.01, 1.0, cols)


# ----- the quantizer --------------------------------------------------------------------------

def test_int8_reconstruction_error_is_below_half_a_step():
    w = _weight()
    q = rtn_quantize(w, 8, group_size=32)
    groups = w.reshape(w.shape[0], -1, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 255
    err = (q - w).abs().reshape(groups.shape).amax(-1)
    assert (err <= step / 2 + 1e-6).all()
    assert float((q - w).norm() / w.norm()) < 0.01


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("group", [16, 32, 40, None])
def test_each_group_holds_at_most_2_to_the_bits_levels(bits, group):
    w = _weight(cols=96)  # 40 does not divide 96: the last group is shorter
    q = rtn_quantize(w, bits, group_size=group)
    assert q.shape == w.shape and q.dtype == w.dtype
    size = group or 96
    for row in q:
        for start in range(0, 96, size):
            assert len(torch.unique(row[start:start + size])) <= 2**bits
    # each group's min and max are on its grid: they come back
    assert torch.allclose(q.amax(1), w.amax(1), atol=1e-6)
    assert torch.allclose(q.amin(1), w.amin(1), atol=1e-6)


def test_smaller_groups_track_small_weights_better():
    w = _weight()  # column scales span 100x: per-row scales drown the small columns
    small = slice(0, 16)
    err = {g: float((rtn_quantize(w, 4, g) - w)[:, small].abs().mean()) for g in (16, None)}
    assert err[16] < err[None] / 3


def test_quantizer_does_not_modify_its_input_and_rejects_bad_arguments():
    w = _weight()
    before = w.clone()
    rtn_quantize(w, 4, 32), rtn_cells(w, 4, 32)
    assert torch.equal(w, before)
    with pytest.raises(Exception, match="bits"):
        rtn_quantize(w, 0)
    with pytest.raises(Exception, match="group_size"):
        rtn_quantize(w, 4, 0)


def test_moves_inside_the_rounding_cells_leave_the_quantized_weight_unchanged():
    w = _weight()
    lo, hi = rtn_cells(w, 4, 32)
    assert (lo <= w).all() and (w <= hi).all() and (hi - lo).max() > 0
    gen = torch.Generator().manual_seed(1)
    for t in (torch.zeros_like(w), torch.ones_like(w), torch.rand(w.shape, generator=gen)):
        assert torch.equal(rtn_quantize(lo + t * (hi - lo), 4, 32), rtn_quantize(w, 4, 32))


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_packed_codes_are_compact_and_unpack_to_the_quantized_weight(bits):
    for w in (_weight(8, 100), _weight(8, 256)):  # a padded last group, whole groups
        state = rtn_pack(w, bits, 32)
        assert state.codes.dtype == (torch.uint8 if bits <= 8 else torch.int32)
        assert int(state.codes.max()) <= 2**bits - 1
        assert torch.equal(rtn(bits, 32)(w), rtn_quantize(w, bits, 32))
    if bits <= 8:  # a byte per weight and two floats per group: under a third of float32's
        size = sum(t.numel() * t.element_size() for t in (state.codes, state.lo, state.step))
        assert size < w.numel() * w.element_size() / 3


def test_layer_at_a_time_scores_as_the_whole_quantized_copy(toy_original, toy_facts):
    """`quantized` (each layer de-quantized as it runs) scores exactly as swapping in every
    quantized weight at once, and leaves the model with its own parameter objects, module
    classes and values."""
    model, q = toy_original.model, rtn(4, 32)
    fs = toy_facts.forget.facts[:48]
    b = encode(toy_original.tokenizer, [f.prompt for f in fs], [f.answer for f in fs])
    whole = answer_scores(model, b, quantized_params(model, q))
    params = dict(model.named_parameters())
    classes = {n: type(m) for n, m in model.named_modules()}
    before = snapshot(toy_original)
    with quantized(model, q):
        layered = answer_scores(model, b)
        again = answer_logprobs(toy_original, [f.prompt for f in fs], [f.answer for f in fs],
                                16)[2]
    assert torch.allclose(layered.total, whole.total, atol=1e-5)
    assert torch.equal(layered.exact, whole.exact) and np.array_equal(again, whole.exact.numpy())
    assert not torch.equal(whole.total, answer_scores(model, b).total)  # it did quantize
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p is params[n] for n, p in model.named_parameters())
    assert {n: type(m) for n, m in model.named_modules()} == classes
    after = snapshot(toy_original)
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_tied_embeddings_are_quantized_in_both_places(toy_original, toy_facts):
    """With `embeddings`, a weight shared by the input embedding and the output head is
    quantized for both (as one tensor) and stays shared afterwards."""
    s = toy_original.clone(source="tied")
    model = s.model
    model.lm_head.weight = model.model.embed_tokens.weight
    q = rtn(2, 32)
    fs = toy_facts.forget.facts[:16]
    b = encode(s.tokenizer, [f.prompt for f in fs], [f.answer for f in fs])
    whole = answer_scores(model, b, quantized_params(model, q, embeddings=True))
    shared = model.lm_head.weight
    with quantized(model, q, embeddings=True):
        assert torch.equal(model.lm_head.weight, q(shared))
        assert torch.equal(model.model.embed_tokens.weight, q(shared))
        layered = answer_scores(model, b)
    assert torch.allclose(layered.total, whole.total, atol=1e-5)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_bitsandbytes_on_cuda_by_default_and_on_the_cpu_when_asked():
    qs, note = quantizers((8, 4), 64, device="cpu")
    assert list(qs) == ["rtn8", "rtn4"] and "not CUDA" in note
    assert list(quantizers((4,), bnb=False)[0]) == ["rtn4"]
    qs, note = quantizers((4,), device="cpu", bnb=True)  # bitsandbytes is in the dev extra
    assert list(qs) == ["rtn4", "bnb_nf4", "bnb_int8"], note
    w = _weight(16, 256)
    for name in ("bnb_nf4", "bnb_int8"):
        q = qs[name](w)
        assert q.shape == w.shape and q.dtype == w.dtype and not torch.equal(q, w)
    # int8: row-wise absmax, so every error is within half a step of its row's 127 levels
    step = w.abs().amax(1, keepdim=True) / 127
    assert ((qs["bnb_int8"](w) - w).abs() <= 0.51 * step + 1e-3).all()
    # NF4: 16 levels per block of 64, so it errs more than int8 and less than the weights vary
    err4 = (qs["bnb_nf4"](w) - w).abs().mean()
    assert (qs["bnb_int8"](w) - w).abs().mean() < err4 < 0.5 * w.abs().mean()
    packed, state, *_ = qs["bnb_nf4"].pack(w)  # two 4-bit codes a byte
    assert packed.numel() * packed.element_size() == w.numel() // 2


# ----- known truth on the toy world ------------------------------------------------------------

# Rounding cells of 128-column groups: wide enough for a quick edit to forget (the probe's
# default groups of 32 leave narrower cells); the probe is run with the same groups.
CELL_GROUP = 128


@pytest.fixture(scope="module")
def in_cell(toy_original, toy_facts):
    return in_cell_suppressor(toy_original, toy_facts.forget, toy_facts.retain.take(160),
                              group_size=CELL_GROUP, steps=25, rate=0.1)


def test_quantization_undoes_an_edit_inside_the_rounding_cells(toy_original, toy_oracle,
                                                                toy_facts, in_cell):
    """Catches: an edit smaller than the 4-bit grid (Q4(M1) == Q4(M0) by construction), read
    against the oracle's floor; 8-bit's finer grid keeps the edit."""
    q = lambda w: rtn_quantize(w, 4, CELL_GROUP)  # noqa: E731
    q0, q1 = quantized_params(toy_original.model, q), quantized_params(in_cell.model, q)
    assert all(torch.equal(q0[k], q1[k]) for k in q0)  # the construction holds
    before = [snapshot(m) for m in (toy_original, in_cell, toy_oracle)]
    f = quantization(toy_original, in_cell, toy_facts, oracle=toy_oracle, group_size=CELL_GROUP)
    after = [snapshot(m) for m in (toy_original, in_cell, toy_oracle)]
    assert all(torch.equal(a[k], b[k]) for a, b in zip(before, after) for k in a)
    th = QuantizationThresholds()
    assert f.reading == "suppression-signature", f.reason
    assert f.meta["best"] == "rtn4" and f.meta["broken"] == []
    assert f.scores["recovery_rtn4"] - f.scores["floor_rtn4"] >= th.recovered
    assert f.scores["recovery_rtn8"] < f.scores["recovery_rtn4"]
    assert f.arrays["forget_rtn4_M1"].shape == (len(toy_facts.forget),)
    again = quantization(toy_original, in_cell, toy_facts, oracle=toy_oracle,
                         group_size=CELL_GROUP)
    assert again.reason == f.reason and again.scores == f.scores  # deterministic
    assert Finding.from_json(f.to_json()) == f and draw(f) is not None


def test_oracle_is_not_read_as_suppression(toy_original, toy_oracle, toy_facts):
    """The retrain oracle as M1: quantization brings back no more than its floor."""
    th = QuantizationThresholds()
    f = quantization(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)
    assert f.reading == "removal-consistent", f.reason
    for q in f.meta["quantizers"]:
        assert abs(f.scores[f"recovery_{q}"] - f.scores[f"floor_{q}"]) <= th.floor_margin
    alone = quantization(toy_original, toy_oracle, toy_facts)  # no floor: not removal either
    assert alone.reading != "suppression-signature" and "floor" in alone.reason


def test_bitsandbytes_quantizers_read_the_oracle_as_removal(toy_original, toy_oracle, toy_facts):
    """With `bnb=True` the attack runs NF4 and int8 too (here on the CPU), under the same
    reading rule: the oracle as M1 gets back no more than its floor from any of them."""
    th = QuantizationThresholds()
    f = quantization(toy_original, toy_oracle, toy_facts, oracle=toy_oracle, bits=(4,), bnb=True)
    assert f.meta["quantizers"] == ["rtn4", "bnb_nf4", "bnb_int8"], f.meta["bitsandbytes"]
    assert f.reading == "removal-consistent", f.reason
    for q in f.meta["quantizers"]:
        assert abs(f.scores[f"recovery_{q}"] - f.scores[f"floor_{q}"]) <= th.floor_margin
        assert f.scores[f"acc_forget_{q}_M0"] >= 0.9  # M0 survives each quantizer


def test_identity_still_answers(toy_original, toy_facts):
    f = quantization(toy_original, identity_edit(toy_original), toy_facts)
    assert f.reading == "inconclusive" and "still answers" in f.reason


def test_hook_suppressor_is_not_a_weight_attacks_business(toy_original, toy_facts):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    f = quantization(toy_original, m1, toy_facts)
    assert f.reading == "inconclusive" and "does not apply" in f.reason
    assert "recovery" not in f.scores and draw(f) is not None


def test_a_quantizer_that_breaks_m0_is_not_read(toy_original, toy_facts, in_cell):
    """A quantizer counts as broken when Q(M0) loses more than `broken_drop` retain / holdout
    accuracy (the toy model shrugs off even 1-bit rounding, so a negative bar breaks them all)."""
    th = QuantizationThresholds(broken_drop=-1.0)
    f = quantization(toy_original, in_cell, toy_facts, thresholds=th)
    assert f.meta["broken"] == ["rtn8", "rtn4"]
    assert f.reading == "inconclusive" and "breaks M0" in f.reason
    assert math.isfinite(f.scores["recovery_rtn4"])  # reported, not read
    assert np.isnan(f.scores["floor_rtn4"]) and "recovery" not in f.scores
