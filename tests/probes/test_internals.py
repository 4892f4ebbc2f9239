"""`probes.internals` on the toy world: one prompt read in M0 and in a suppressor whose every
activation before its last block is M0's, so where the two differ is known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from probes.internals import compare_prompt, patched_predictions
from workbench.behavior import evaluate
from workbench.errors import LayerError


@pytest.fixture(scope="module")
def forgotten(toy_original, toy_late_suppressor, toy_facts):
    """A forget fact the original answers and the suppressor no longer does."""
    forget = toy_facts.forget.take(24)
    r0, r1 = evaluate(toy_original, forget), evaluate(toy_late_suppressor, forget)
    return next(f for f, a, b in zip(forget, r0, r1, strict=True) if a.correct and not b.correct)


@pytest.fixture(scope="module")
def view(toy_original, toy_late_suppressor, forgotten):
    return compare_prompt(toy_original, toy_late_suppressor, forgotten.prompt, forgotten.answer)


def test_the_lens_and_the_patching_grid_place_the_edit_in_the_last_block(view, toy_original):
    n, last = toy_original.n_layers, len(view.tokens) - 1
    assert view.recovery.shape == view.resid_diff.shape == (n, last + 1)
    assert view.lens["M0"].answer_rank[-1, last] == 0 < view.lens["M1"].answer_rank[-1, last]
    # before the last block the suppressor computes what M0 computes: nothing to patch back
    assert np.abs(view.resid_diff[: n - 1]).max() < 1e-4
    assert np.abs(view.recovery[: n - 1]).max() < 0.05
    assert view.resid_diff[n - 1, last] > 0.01
    # M0's last residual at the last token (same norm and head): M0's answer back in full
    assert view.recovery[n - 1, last] == pytest.approx(1.0, abs=0.02)
    assert view.logprob["M0"] > view.logprob["M1"] + 1.0
    assert view.norms["M0"]["resid_post"].shape == (n,)


def test_patched_predictions_agree_with_the_grid(toy_original, toy_late_suppressor, forgotten,
                                                 view):
    n, last = toy_original.n_layers, len(view.tokens) - 1
    p = patched_predictions(toy_original, toy_late_suppressor, forgotten.prompt,
                            forgotten.answer, n - 1, last)
    gap = view.logprob["M0"] - view.logprob["M1"]
    grid = view.logprob["M1"] + view.recovery[n - 1, last] * gap
    assert p.answer_logprob == pytest.approx(grid, abs=1e-3)
    assert p.top[0][0].strip() == forgotten.answer.strip()  # patched: M0's answer on top
    assert p.unpatched_top[0][0].strip() != forgotten.answer.strip()
    with pytest.raises(LayerError, match="position"):
        patched_predictions(toy_original, toy_late_suppressor, forgotten.prompt,
                            forgotten.answer, 0, last + 1)
