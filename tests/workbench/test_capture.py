"""Activation capture: backends agree, padding is harmless, early stop, interventions are seen."""

from __future__ import annotations

import pytest
import torch

from workbench.capture import capture, hook_name
from workbench.errors import LayerError

PROMPTS = ["The capital of France is", "Water is made of hydrogen and",
           "The opposite of hot is", "Monday comes before"]
ALL_POINTS = ["resid_pre", "attn_out", "mlp_out", "resid_post"]


@pytest.mark.parametrize("position", ["last", "all"])
def test_tl_and_nnsight_backends_agree_with_hf(bundled, position):
    ref = capture(bundled, PROMPTS, [3, 17], ALL_POINTS, position=position, backend="hf")
    for backend in ("tl", "nnsight"):
        other = capture(bundled, PROMPTS, [3, 17], ALL_POINTS, position=position,
                        backend=backend)
        assert set(other.acts) == set(ref.acts)
        for name, t in ref.acts.items():
            diff = (t - other[name]).abs()
            if position == "all":  # compare real tokens only
                keep = torch.arange(t.shape[1])[None] < ref.lengths[:, None]
                diff = diff[keep]
            assert diff.max() < 1e-3, (backend, name, diff.max())


def test_tl_and_nnsight_agree_with_each_other(bundled):
    tl = capture(bundled, PROMPTS, [10], position="last", backend="tl")
    nn = capture(bundled, PROMPTS, [10], position="last", backend="nnsight")
    assert (tl.layer(10) - nn.layer(10)).abs().max() < 1e-3


def test_resid_post_equals_hf_hidden_states(bundled):
    acts = capture(bundled, PROMPTS[:1], [0, 12, 29], position="all")
    ids = bundled.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        hs = bundled.model(ids, output_hidden_states=True).hidden_states
    n = ids.shape[1]
    for L in (0, 12):
        assert torch.allclose(acts.layer(L)[0, :n], hs[L + 1][0], atol=1e-5)
    # the last hidden state HF returns is after the final norm; ours is the raw residual
    assert torch.allclose(bundled.model.model.norm(acts.layer(29)[0, :n]), hs[30][0], atol=1e-4)


def test_padding_and_batch_size_do_not_change_results(bundled):
    batched = capture(bundled, PROMPTS, [5], position="last", batch_size=4)
    single = capture(bundled, PROMPTS, [5], position="last", batch_size=1)
    assert torch.allclose(batched.layer(5), single.layer(5), atol=1e-4)


def test_answer_position_is_the_answer_token(bundled):
    answers = [" Paris", " oxygen", " cold", " Tuesday"]
    at_answer = capture(bundled, PROMPTS, [4], position="answer", answers=answers)
    joined = capture(bundled, [p + a for p, a in zip(PROMPTS, answers)], [4], position="last")
    # every answer above is a single token, so the answer token is the joined prompt's last token
    assert torch.allclose(at_answer.layer(4), joined.layer(4), atol=1e-4)


def test_capture_stops_after_the_deepest_layer(bundled):
    calls = []
    handle = bundled.model.model.layers[8].register_forward_hook(lambda *a: calls.append(1))
    try:
        capture(bundled, PROMPTS, [2, 7], position="last")
        assert calls == []
        capture(bundled, PROMPTS, [8], position="last")
        assert len(calls) == 1
    finally:
        handle.remove()


def test_interventions_are_seen_by_capture(bundled):
    class Zero:
        name = "zero-l3"

        def attach(self, model):
            layer = model.model.layers[3]
            return [layer.register_forward_hook(lambda m, a, o: torch.zeros_like(o))]

        def save(self, directory):
            return {"type": "zero"}

    edited = bundled.with_interventions(Zero())
    a = capture(edited, PROMPTS, [3, 4], position="last")
    assert a.layer(3).abs().max() == 0
    clean = capture(bundled, PROMPTS, [3], position="last")
    assert clean.layer(3).abs().max() > 0  # the base subject is untouched


def test_stack_and_hook_names(bundled):
    a = capture(bundled, PROMPTS, [1, 2, 3], position="last")
    assert a.stack().shape == (3, len(PROMPTS), bundled.d_model)
    assert hook_name(2) in a.acts


@pytest.mark.parametrize("kwargs,err", [
    ({"layers": [30]}, LayerError), ({"layers": [-1]}, LayerError), ({"layers": []}, LayerError),
    ({"layers": [1], "points": ["bogus"]}, LayerError),
    ({"layers": [1], "position": "answer"}, ValueError),
    ({"layers": [1], "backend": "magic"}, ValueError),
    ({"layers": [1], "remote": True}, ValueError),
])
def test_bad_requests_are_clear_errors(bundled, kwargs, err):
    with pytest.raises(err):
        capture(bundled, PROMPTS, **kwargs)


def test_the_answer_pass_keeps_what_capture_gives(bundled, monkeypatch):
    import numpy as np

    import probes.common
    from probes.common import answer_table, resid
    from workbench.behavior import answer_logprobs

    prompts = ["The capital of France is", "Water is made of hydrogen and",
               "The first president of the United States was"]
    answers = [" Paris", " oxygen", " George Washington"]
    layers = list(range(bundled.n_layers))
    want = capture(bundled, prompts, layers).stack().float().numpy()
    h = np.full((bundled.n_layers, len(prompts), bundled.d_model), np.nan, np.float32)
    plain = answer_logprobs(bundled, prompts, answers, batch_size=2)
    kept = answer_logprobs(bundled, prompts, answers, batch_size=2, resid_out=h)
    assert np.abs(h - want).max() < 1e-3 * np.abs(want).max()
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(plain, kept, strict=True))
    # the memoised table fills `resid`'s memo for the same prompts (what the signal reads)
    answer_table(bundled, prompts, answers, keep_resid=True)
    monkeypatch.setattr(probes.common, "capture", None)  # no second pass
    got = resid(bundled, prompts, [0, bundled.n_layers - 1])
    assert np.abs(got - want[[0, -1]]).max() < 1e-3 * np.abs(want).max()
