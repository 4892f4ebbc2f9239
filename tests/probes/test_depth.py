"""The patch engine at teacher-forced answer positions against a naive loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_subject

from probes.patch_engine import patch
from workbench.batching import encode
from workbench.errors import LayerError
from workbench.models import decoder_layers

PROMPTS = ["The capital of France is", "Hello there my", "A B C D E F", "x"]
ANSWERS = [" Paris", " friend of mine", " G", " y z"]


# ----- the engine at teacher-forced answer positions (tiny random models) -------------------

def naive_resid_post(base, source, prompts, answers, layer: int, backs) -> np.ndarray:
    """Answer log-prob of `base` with `source`'s block-`layer` output patched at each row's
    positions last - back (all at once), one full forward pass, independent of the engine."""
    b = encode(base.tokenizer, prompts, answers)
    got = {}
    h = decoder_layers(source.model)[layer].register_forward_hook(
        lambda m, a, o: got.setdefault("h", (o[0] if isinstance(o, tuple) else o).clone()))
    with torch.no_grad():
        source.model(input_ids=b.input_ids)
    h.remove()

    def put(x):
        x = x.clone()
        for r, bs in enumerate(backs):
            for k in bs:
                p = int(b.last[r]) - k
                x[r, p] = got["h"][r, p]
        return x

    h = decoder_layers(base.model)[layer].register_forward_hook(
        lambda m, a, o: (put(o[0]), *o[1:]) if isinstance(o, tuple) else put(o))
    with torch.no_grad():
        logits = base.model(input_ids=b.input_ids).logits
    h.remove()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, b.input_ids[:, 1:, None])[..., 0]
    return (logp * b.answer_mask[:, :-1]).sum(1).numpy()


@pytest.fixture
def pair(bundled):
    return (make_tiny_subject(bundled.tokenizer, n_layers=3, seed=0),
            make_tiny_subject(bundled.tokenizer, n_layers=3, seed=1))


def test_patching_answer_positions_equals_naive_loop(pair):
    m0, m1 = pair
    b = encode(m0.tokenizer, PROMPTS, ANSWERS)
    n_ans = (b.lengths - b.last - 1).tolist()
    assert max(n_ans) > 1  # some answers span several tokens: positions after the prompt
    backs = [tuple(range(0, -n, -1)) for n in n_ans]
    rows = [(f, tuple((L, "resid_post", k) for k in backs[f])) for L in range(3)
            for f in range(len(PROMPTS))]
    run = patch(m1, m0, PROMPTS, ANSWERS, rows, batch_size=5)
    ref = np.concatenate([naive_resid_post(m1, m0, PROMPTS, ANSWERS, L, backs) for L in range(3)])
    assert run.method == "full"
    assert np.abs(run.logprobs - ref).max() < 1e-4
    assert np.abs(ref - np.tile(run.base, 3)).max() > 1e-2  # the patches do something
    # one answer position alone, and a mix of prompt and answer positions
    one = patch(m1, m0, PROMPTS[1:2], ANSWERS[1:2], [(0, ((2, "resid_post", -1),))])
    assert abs(one.logprobs[0] - naive_resid_post(m1, m0, PROMPTS[1:2], ANSWERS[1:2], 2,
                                                  [(-1,)])[0]) < 1e-4
    mix = patch(m1, m0, PROMPTS[1:2], ANSWERS[1:2], [(0, ((1, "resid_post", 2),
                                                          (1, "resid_post", -2)))])
    assert abs(mix.logprobs[0] - naive_resid_post(m1, m0, PROMPTS[1:2], ANSWERS[1:2], 1,
                                                  [(2, -2)])[0]) < 1e-4


def test_patching_rejects_positions_outside_the_tokens(pair):
    m0, m1 = pair
    n = len(m0.tokenizer(ANSWERS[0], add_special_tokens=False)["input_ids"])
    with pytest.raises(LayerError, match="invalid patch cell"):
        patch(m1, m0, PROMPTS, ANSWERS, [(0, ((0, "resid_post", -n - 1),))])
    with pytest.raises(LayerError, match="invalid patch cell"):
        patch(m1, m0, PROMPTS, ANSWERS, [(3, ((0, "resid_post", 5),))])  # "x": a 1-2 token prompt
