"""Activation patching (the batched engine, UDS), attribution patching, parameter restoration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_subject

from probes.attribution import attribution_deltas, attribution_patching
from probes.patch_engine import patch, tl_reference_patching
from probes.patching import activation_patching
from probes.restoration import groups, parameter_restoration, restoration_scan
from workbench.batching import encode
from workbench.errors import IncompatibleSubjectsError, LayerError
from workbench.facts import Fact, FactSet
from workbench.models import decoder_layers

PROMPTS = ["The capital of France is", "Hello there my", "A B C D E F", "x"]
ANSWERS = [" Paris", " friend of mine", " G", " y z"]
POINTS = ("resid_pre", "resid_post", "mlp_out", "attn_out")


@pytest.fixture
def pair(bundled):
    return (make_tiny_subject(bundled.tokenizer, n_layers=3, seed=0),
            make_tiny_subject(bundled.tokenizer, n_layers=3, seed=1))


def naive(base, source, prompts, answers, layer, point, back=0) -> np.ndarray:
    """One full forward pass per cell, written independently of probes.patch_engine."""
    b = encode(base.tokenizer, prompts, answers)
    blk = decoder_layers(base.model)[layer]
    mod = {"attn_out": blk.self_attn, "mlp_out": blk.mlp}.get(point, blk)
    got = {}
    rows = torch.arange(len(prompts))
    pos = b.last - back

    def grab(_m, args, kwargs, out=None):
        h = (args[0] if args else kwargs["hidden_states"]) if out is None else out
        got["h"] = (h[0] if isinstance(h, tuple) else h)[rows, pos].clone()

    src_mod = {"attn_out": decoder_layers(source.model)[layer].self_attn,
               "mlp_out": decoder_layers(source.model)[layer].mlp}.get(
        point, decoder_layers(source.model)[layer])
    if point == "resid_pre":
        h = src_mod.register_forward_pre_hook(lambda m, a, k: grab(m, a, k), with_kwargs=True)
    else:
        h = src_mod.register_forward_hook(lambda m, a, o: grab(m, a, None, o))
    with torch.no_grad():
        source.model(input_ids=b.input_ids)
    h.remove()

    def put(x):
        x = x.clone()
        x[rows, pos] = got["h"]
        return x

    if point == "resid_pre":
        h = mod.register_forward_pre_hook(
            lambda m, a, k: ((put(a[0]), *a[1:]), k) if a else
            (a, {**k, "hidden_states": put(k["hidden_states"])}), with_kwargs=True)
    else:
        h = mod.register_forward_hook(
            lambda m, a, o: (put(o[0]), *o[1:]) if isinstance(o, tuple) else put(o))
    with torch.no_grad():
        logits = base.model(input_ids=b.input_ids).logits
    h.remove()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, b.input_ids[:, 1:, None])[..., 0]
    return (logp * b.answer_mask[:, :-1]).sum(1).numpy()


# ----- mechanics on tiny random models ------------------------------------------------------

def test_batched_patching_equals_naive_loop(pair, monkeypatch):
    import probes.patch_engine as engine

    m0, m1 = pair
    cells = [(L, p) for p in POINTS for L in range(3)]
    rows = [(f, ((L, p, 0),)) for L, p in cells for f in range(len(PROMPTS))]
    inc = patch(m1, m0, PROMPTS, ANSWERS, rows, batch_size=7, method="incremental")
    full = patch(m1, m0, PROMPTS, ANSWERS, rows, batch_size=5, method="full")
    ref = np.concatenate([naive(m1, m0, PROMPTS, ANSWERS, L, p) for L, p in cells])
    assert np.abs(inc.logprobs - ref).max() < 1e-4
    monkeypatch.setattr(engine, "INCREMENTAL_CHUNK_BYTES", 1)  # a memory cap: one row a chunk
    small = patch(m1, m0, PROMPTS, ANSWERS, rows, batch_size=7, method="incremental")
    assert np.abs(small.logprobs - ref).max() < 1e-4
    assert np.abs(full.logprobs - ref).max() < 1e-4
    assert np.abs(ref - np.tile(inc.base, len(cells))).max() > 1e-2  # the patches do something
    # earlier positions (all-position patching) go through the full path
    rows_back = [(f, ((1, "resid_post", 1),)) for f in range(3)]
    back = patch(m1, m0, PROMPTS[:3], ANSWERS[:3], rows_back)
    assert back.method == "full"
    assert np.abs(back.logprobs - naive(m1, m0, PROMPTS[:3], ANSWERS[:3], 1, "resid_post", 1)
                  ).max() < 1e-4


def test_bfloat16_patching_keeps_the_cached_path(bundled):
    """A GPU audit's precision: on SmolLM2 in bfloat16 the cached path and a full pass differ by
    up to a tenth of a nat from rounding alone on its built-in facts; the self-check allows that
    (it would otherwise fall back to a full pass per row), and the two paths agree."""
    import copy

    from workbench.facts import builtin_facts

    m0 = copy.deepcopy(bundled)
    m0.model.to(torch.bfloat16)
    m1 = copy.deepcopy(m0)
    with torch.no_grad():
        decoder_layers(m1.model)[8].mlp.down_proj.weight.mul_(0)
    fs = list(builtin_facts())
    prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
    rows = [(f, ((L, "resid_post", 0),)) for L in (10, 20) for f in range(len(fs))]
    auto = patch(m0, m1, prompts, answers, rows)
    full = patch(m0, m1, prompts, answers, rows, method="full")
    assert auto.method == "incremental" and full.method == "full"
    diff = np.abs(auto.logprobs - full.logprobs)
    assert diff.mean() < 0.05 and diff.max() < 0.5
    assert np.abs(full.logprobs - np.tile(full.base, 2)).max() > 1  # the patches do something


def test_nnsight_patching_equals_naive_loop(pair):
    """The nnsight backend (local here: `remote=True` is the same trace sent to NDIF) patches
    every point, several cells a row, and earlier positions, as the hand-written loop does."""
    m0, m1 = pair
    cells = [(L, p) for p in POINTS for L in range(3)]
    rows = [(f, ((L, p, 0),)) for L, p in cells for f in range(len(PROMPTS))]
    run = patch(m1, m0, PROMPTS, ANSWERS, rows, batch_size=5, backend="nnsight")
    ref = np.concatenate([naive(m1, m0, PROMPTS, ANSWERS, L, p) for L, p in cells])
    assert run.method == "nnsight" and np.abs(run.logprobs - ref).max() < 1e-4
    hf = patch(m1, m0, PROMPTS, ANSWERS, rows[:4])
    assert np.abs(run.base - hf.base).max() < 1e-4 and np.abs(run.source - hf.source).max() < 1e-4
    back = [(f, ((1, "resid_post", 1),)) for f in range(3)]
    got = patch(m1, m0, PROMPTS[:3], ANSWERS[:3], back, backend="nnsight").logprobs
    assert np.abs(got - naive(m1, m0, PROMPTS[:3], ANSWERS[:3], 1, "resid_post", 1)).max() < 1e-4
    two = [(0, ((0, "mlp_out", 0), (2, "resid_pre", 0)))]  # two cells in one row, both written
    both = patch(m1, m0, PROMPTS[:1], ANSWERS[:1], two, backend="nnsight").logprobs
    assert np.abs(both - patch(m1, m0, PROMPTS[:1], ANSWERS[:1], two, method="full").logprobs
                  ).max() < 1e-4
    with pytest.raises(ValueError, match="only available with backend='nnsight'"):
        patch(m1, m0, PROMPTS, ANSWERS, rows[:1], remote=True)
    with pytest.raises(ValueError, match="backend must be hf or nnsight, not 'tl'"):
        patch(m1, m0, PROMPTS, ANSWERS, rows[:1], backend="tl")


@pytest.mark.parametrize("point", ["resid_post", "attn_out"])
def test_batched_patching_equals_transformer_lens(pair, point):
    m0, m1 = pair
    rows = [(f, ((L, point, 0),)) for L in range(3) for f in range(len(PROMPTS))]
    ours = patch(m1, m0, PROMPTS, ANSWERS, rows).logprobs.reshape(3, -1).mean(1)
    ref = tl_reference_patching(m1, m0, PROMPTS, ANSWERS, point)
    assert ref.shape == (3,)
    assert np.abs(ours - ref).max() < 1e-4


def test_patching_rejects_bad_cells(pair):
    m0, m1 = pair
    with pytest.raises(LayerError, match="invalid patch cell"):
        patch(m1, m0, PROMPTS, ANSWERS, [(0, ((7, "resid_post", 0),))])
    with pytest.raises(LayerError, match="invalid patch cell"):
        patch(m1, m0, PROMPTS, ANSWERS, [(0, ((0, "logits", 0),))])


def test_prompt_reading_hook_falls_back_to_full_path(pair):
    from workbench.controls import output_only_suppressor

    m0, _ = pair
    facts = FactSet((Fact("a", PROMPTS[0], ANSWERS[0], "forget", entity="France"),))
    sup = output_only_suppressor(m0, facts)
    rows = [(0, ((L, "resid_post", 0),)) for L in range(3)]
    run = patch(sup, m0, PROMPTS[:1], ANSWERS[:1], rows)
    assert run.method == "full"  # the suppressor reads the whole prompt: no KV-cache shortcut
    assert run.base[0] < run.source[0] - 50  # it fired
    assert np.allclose(run.logprobs, run.base, atol=1e-4)  # activations patched are M0's own


def test_attribution_tracks_exact_patching_for_a_small_edit(pair):
    from workbench.controls import noise_edit

    m0, _ = pair
    m1 = noise_edit(m0, scale=0.02, seed=3)
    deltas, lp1 = attribution_deltas(m0, m1, PROMPTS, ANSWERS, ("resid_post", "mlp_out"))
    rows = [(f, ((L, p, 0),)) for p in ("resid_post", "mlp_out") for L in range(3)
            for f in range(len(PROMPTS))]
    exact = patch(m1, m0, PROMPTS, ANSWERS, rows).logprobs.reshape(6, -1) - lp1
    approx = np.concatenate([deltas["resid_post"], deltas["mlp_out"]])
    assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.9


def test_restoration_groups_cover_the_model(tiny):
    gs = groups(tiny.model)
    names = {n for _, _, ns in gs for n in ns}
    assert names == {n for n, _ in tiny.model.named_parameters()}
    labels = [g[0] for g in gs]
    assert "block 0" in labels and "last 1 blocks" in labels and "all mlp" in labels


def test_restoration_reads_an_edit_that_untied_a_tied_head(tiny):
    """Catches: an edit that gives a tied output head its own weights (as the name-cut control
    does, and any third-party edit may) has a parameter M0 lacks by name; restoring M0's head
    must still find M0's (the embedding) and undo the edit."""
    from workbench.controls import untied

    assert tiny.model.config.tie_word_embeddings
    m1 = untied(tiny)
    with torch.no_grad():
        m1.model.get_output_embeddings().weight.mul_(20.0)  # sharper: the answers fall
    scan = restoration_scan(tiny, m1, PROMPTS, ANSWERS)
    assert scan.changed == {"lm_head.weight"} and (scan.lp0 - scan.lp1).min() > 1.0
    head = scan.labels.index("output head (final norm + unembedding)")
    assert scan.recovery[head] > 0.99
    assert scan.recovery[scan.labels.index("block 0")] < 0.01


def test_incompatible_subjects_are_refused(pair, bundled):
    m0, _ = pair
    other = make_tiny_subject(bundled.tokenizer, n_layers=2)
    facts = FactSet((Fact("a", PROMPTS[0], ANSWERS[0], "forget"),))
    for fn in (activation_patching, attribution_patching, parameter_restoration):
        with pytest.raises(IncompatibleSubjectsError, match="num_hidden_layers"):
            fn(m0, other, facts)


# ----- the control edits on the toy world ---------------------------------------------------

@pytest.fixture(scope="module")
def suppressor(toy_original, toy_facts):
    from workbench.controls import output_only_suppressor

    return output_only_suppressor(toy_original, toy_facts.forget)


def test_output_suppressor_shows_suppression_signature(toy_original, suppressor, toy_facts):
    ap = activation_patching(toy_original, suppressor, toy_facts, all_positions=True, max_back=2)
    assert ap.reading == "suppression-signature", ap.reason
    assert ap.scores["max_divergence"] < 1e-4 and ap.scores["gap_nats"] > 5
    n = toy_original.n_layers
    assert ap.arrays["recovery_resid_post"].shape == (n,)
    # every activation is M0's own, so no patch can move the answer: the edit is after them all
    assert np.abs(ap.arrays["recovery_resid_post_by_back"]).max() < 1e-3
    assert ap.arrays["recovery_resid_post_by_back"].shape == (n, 2)
    from apps.figures import draw
    from probes.base import Finding

    assert draw(Finding.from_json(ap.to_json())) is not None
    rs = parameter_restoration(toy_original, suppressor, toy_facts)
    assert rs.reading == "suppression-signature", rs.reason
    assert rs.meta["weights_identical"]
    assert rs.scores["best_intervention_recovery"] > 0.95
    at = attribution_patching(toy_original, suppressor, toy_facts, exact=ap)
    assert at.reading == "suppression-signature", at.reason


def test_a_hook_on_changed_weights_is_taken_off_on_those_weights(toy_original, suppressor,
                                                                  toy_facts):
    """Catches: a suppressing hook served on a 4-bit quantized copy of M0 (every weight differs
    a little): restoring M0's weight groups cannot lift the hook, removing the hook on M1's own
    quantized weights does; the hooked subject and the fork keep their own hooks."""
    from probes.robustness import quantized_copy

    served = quantized_copy(suppressor)
    rs = parameter_restoration(toy_original, served, toy_facts)
    assert not rs.meta["weights_identical"] and rs.meta["interventions"]
    assert rs.reading == "suppression-signature", rs.reason
    assert rs.scores["best_intervention_recovery"] > 0.9
    assert "on M1's own weights" in rs.reason
    bare = served.without_interventions()
    assert bare.interventions == () and served.interventions
    assert all(not m._forward_hooks for m in bare.model.modules())
    assert any(m._forward_hooks for m in served.model.modules())


def test_last_block_suppressor_is_caught(toy_original, toy_oracle, toy_facts,
                                         toy_late_suppressor):
    """A weight suppressor confined to the last block: M1 computes like M0 up to it, and patching
    M0's last MLP output back restores the answers; against the oracle it is far from as deep."""
    ap = activation_patching(toy_original, toy_late_suppressor, toy_facts, oracle=toy_oracle)
    assert ap.reading == "suppression-signature", ap.reason
    assert ap.scores["best_single_recovery"] > 0.8
    assert ap.scores["uds"] < 0.7  # the oracle scores 1 against itself (the next test)
    rs = parameter_restoration(toy_original, toy_late_suppressor, toy_facts)
    assert rs.reading == "suppression-signature" and "block 3" in rs.reason, rs.reason


def test_an_oracle_that_is_m1_is_scanned_once(toy_original, toy_facts, toy_late_suppressor,
                                              monkeypatch):
    """Auditing an edit against itself as the oracle (the demo audits the oracle as an edit)
    reuses M1's scan as the floor instead of running it twice; a copy with equal weights but
    its own tensors counts as the same model, a changed copy does not."""
    import probes.restoration as restoration

    calls = []
    real = restoration.restoration_scan
    monkeypatch.setattr(restoration, "restoration_scan",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    same = toy_late_suppressor.clone()
    rs = parameter_restoration(toy_original, toy_late_suppressor, toy_facts, oracle=same)
    assert len(calls) == 1
    assert np.array_equal(rs.arrays["recovery_floor"], rs.arrays["recovery"])
    assert restoration.same_model(toy_late_suppressor, same)
    with torch.no_grad():
        next(same.model.parameters()).add_(1e-3)
    assert not restoration.same_model(toy_late_suppressor, same)
    assert not restoration.same_model(toy_late_suppressor, toy_original)


def test_a_cut_of_the_names_input_rows_is_caught(toy_original, toy_oracle, toy_facts):
    """Only the forget names' input-embedding rows changed: the blocks still hold the facts, and
    restoring M0's embedding alone gives them back; the same scan of the oracle reads nothing."""
    from workbench.controls import name_cut_suppressor

    others = toy_facts.retain + toy_facts.holdout + toy_facts.split("unseen")
    m1 = name_cut_suppressor(toy_original, toy_facts.forget, others)
    rs = parameter_restoration(toy_original, m1, toy_facts, oracle=toy_oracle)
    assert rs.reading == "suppression-signature" and "embeddings" in rs.reason, rs.reason
    assert rs.scores["best_small_late_recovery"] > 0.9
    assert parameter_restoration(toy_original, toy_oracle, toy_facts).reading == "inconclusive"


def test_restoring_where_facts_are_stored_is_not_read_as_suppression():
    """Restoring the weights an edit changed undoes any edit: an early window that restores the
    answer (where facts are stored) is no evidence of suppression; a late one is, unless the
    oracle restored the same way recovers as much."""
    from probes.restoration import RestorationThresholds, _read

    th = RestorationThresholds()
    labels = ["block 1", "block 10", "last 1 blocks"]
    kinds = ["window1", "window1", "last_k"]
    early = np.array([0.9, 0.0, 0.0])
    reading, reason, _ = _read(th, labels, kinds, early, 12, True, [])
    assert reading != "suppression-signature" and "block 1" in reason, reason
    late = np.array([0.0, 0.9, 0.9])
    assert _read(th, labels, kinds, late, 12, True, [])[0] == "suppression-signature"
    same_in_oracle = _read(th, labels, kinds, late, 12, True, [], floor=late - 0.1)
    assert same_in_oracle[0] != "suppression-signature", same_in_oracle[1]


def test_retrain_oracle_shows_no_suppression_signature(toy_original, toy_oracle, toy_facts):
    ap = activation_patching(toy_original, toy_oracle, toy_facts, oracle=toy_oracle)
    assert ap.reading == "removal-consistent", ap.reason
    assert ap.scores["uds"] == pytest.approx(1.0)
    alone = activation_patching(toy_original, toy_oracle, toy_facts)
    assert alone.reading != "suppression-signature", alone.reason
    rs = parameter_restoration(toy_original, toy_oracle, toy_facts)
    # the oracle was trained from scratch, not edited from M0: copying M0's weights into it
    # measures nothing, whatever it happens to restore
    assert rs.reading == "inconclusive" and "not an edit of M0" in rs.reason, rs.reason
    assert rs.scores["tensor_fraction"] > 0.5
    at = attribution_patching(toy_original, toy_oracle, toy_facts, exact=alone)
    assert at.reading != "suppression-signature", at.reason
    assert -1 <= at.scores["correlation"] <= 1


@pytest.mark.parametrize("toy", [False, True])
def test_restoring_from_the_first_changed_block_equals_the_whole_model(pair, toy, request):
    """Every restoration group scored from M1's cached block inputs (from its first restored
    block on) gives the log-probs of running the whole model with the group swapped in."""
    from probes.restore_blocks import PrefixScan
    from workbench.scoring import answer_scores

    if toy:  # a trained model, its own prompts, different lengths in one batch
        m0, m1 = request.getfixturevalue("toy_original"), request.getfixturevalue("toy_oracle")
        fs = request.getfixturevalue("toy_facts").forget.facts[:24]
        prompts, answers = [f.prompt for f in fs], [f.answer for f in fs]
    else:
        (m0, m1), prompts, answers = pair, PROMPTS, ANSWERS
    p0 = dict(m0.model.named_parameters())
    runner = PrefixScan(m1.model, m1.tokenizer, prompts, answers, 16, "cpu")
    assert runner.states is not None
    started = 0
    for _label, _kind, names in groups(m1.model):
        params = {n: p0[n] for n in names}
        fast = runner.logprobs(params)
        ref = torch.cat([answer_scores(m1.model, b, params).total for b in runner.batches])
        assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-5), _label
        started += runner.start(params) not in (None, 0)
    assert started >= m1.n_layers  # most windows really skipped the blocks before them
    plain = torch.cat([answer_scores(m1.model, b).total for b in runner.batches])
    assert torch.allclose(runner.logprobs(None), plain, atol=1e-4, rtol=1e-5)


def test_weight_restoration_scan_localises_a_weight_edit(pair):
    """M1 = M0 with block 1 re-randomised: restoring block 1 (or any group holding it) gives back
    M0's answers exactly, groups without it give nothing, and M1 itself is never modified."""
    m0, other = pair
    m1 = m0.clone(source="block-1-swap")
    with torch.no_grad():
        for p, q in zip(m1.layers()[1].parameters(), other.layers()[1].parameters(), strict=True):
            p.copy_(q)
    before = {n: p.clone() for n, p in m1.model.named_parameters()}
    scan = restoration_scan(m0, m1, PROMPTS, ANSWERS, window_sizes=(1, 2), last_k=(1,),
                            min_gap=0.0)
    assert all(torch.equal(before[n], p) for n, p in m1.model.named_parameters())
    rec = dict(zip(scan.labels, scan.recovery, strict=True))
    assert rec["block 1"] == pytest.approx(1.0, abs=1e-4)
    assert rec["blocks 0-1"] == pytest.approx(1.0, abs=1e-4)
    assert rec["block 0"] == 0 and rec["block 2"] == 0 and rec["last 1 blocks"] == 0
    assert rec["embeddings"] == 0
    assert 0 < scan.param_fraction[scan.labels.index("block 1")] < 0.5


def test_identity_edit_is_inconclusive(toy_original, toy_facts):
    from workbench.controls import identity_edit

    for fn in (activation_patching, parameter_restoration, attribution_patching):
        f = fn(toy_original, identity_edit(toy_original), toy_facts)
        assert f.reading == "inconclusive" and "still answers" in f.reason


def test_answer_logprobs_at_answer_positions_equal_full_logits(pair):
    from workbench.scoring import answer_scores

    m0, m1 = pair
    b = encode(m0.tokenizer, PROMPTS, ANSWERS)
    with torch.no_grad():
        fast = answer_scores(m0.model, b).total
        logits = m0.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    logp = logits[:, :-1].log_softmax(-1).gather(-1, b.input_ids[:, 1:, None])[..., 0]
    ref = (logp * b.answer_mask[:, :-1]).sum(1)
    assert torch.allclose(fast, ref, atol=1e-5)
    run = patch(m1, m0, PROMPTS, ANSWERS, [(0, ((0, "resid_post", 0),))])
    assert np.allclose(run.source, ref.numpy(), atol=1e-5)


def test_a_window_over_most_of_the_depth_is_never_localised():
    """On a 4-block model, restoring blocks 0-2 (three quarters of the depth) is not a localised
    suppressor, however much it restores; one late block is."""
    from probes.restoration import RestorationThresholds, _read

    th = RestorationThresholds()
    labels = ["block 0", "block 1", "block 2", "block 3", "blocks 0-2", "blocks 1-3",
              "last 1 blocks", "last 2 blocks", "output head (final norm + unembedding)"]
    kinds = ["window1"] * 4 + ["window3"] * 2 + ["last_k"] * 2 + ["head"]
    spread = np.array([0.1, 0.1, 0.1, 0.1, 0.9, 0.8, 0.1, 0.7, 0.0])
    reading, reason, _ = _read(th, labels, kinds, spread, 4, True, [])
    assert reading == "removal-consistent", reason
    late = spread.copy()
    late[3] = late[6] = 0.9
    reading, reason, _ = _read(th, labels, kinds, late, 4, True, [])
    assert reading == "suppression-signature" and "block 3" in reason, reason


def test_weight_drift_sums_squares_in_chunks(pair):
    from probes.restoration import _square_sum, weight_drift

    m0, m1 = pair
    p0 = {k: p.detach() for k, p in m0.model.named_parameters()}
    p1 = {k: p.detach() for k, p in m1.model.named_parameters()}
    norm0 = sum(float(p.double().pow(2).sum()) for p in p0.values())
    diff = sum(float((p1[k].double() - p.double()).pow(2).sum()) for k, p in p0.items())
    drift = weight_drift(m0, m1)
    changed = sum(not torch.equal(p, p1[k]) for k, p in p0.items())
    assert 0 < changed < len(p0) and drift["tensor_fraction"] == changed / len(p0)
    assert abs(drift["relative_change"] - (diff / norm0) ** 0.5) < 1e-9
    w = p0["model.embed_tokens.weight"]
    assert abs(_square_sum(w, chunk=7) - float(w.double().pow(2).sum())) < 1e-6 * norm0
    assert weight_drift(m0, m0) == {"tensor_fraction": 0.0, "relative_change": 0.0}
