"""Findings round-trip through JSON and redraw without models; the probe contract (one context,
earlier findings, thresholds recorded, one device)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from apps.figures import draw
from probes.base import Finding, ProbeContext
from workbench.errors import WorkbenchError


def _round_trip(f: Finding) -> Finding:
    return Finding.from_json(json.loads(json.dumps(f.to_json())))


def test_constructed_finding_round_trips():
    f = Finding("activation_patching", "inconclusive", "why",
                scores={"a": 1, "nan": float("nan"), "b": np.float32(0.25)},
                arrays={"f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 3,
                        "f64": np.array([np.nan, 1e-300, -2.5]),
                        "i64": np.arange(4), "b": np.array([True, False]),
                        "empty": np.zeros((0, 3), dtype=np.float32), "scalar": np.float64(7.0)},
                meta={"layers": (0, 1), "nested": {"k": [1, 2.5, None]}, "n": np.int64(3)},
                seconds=1.23456789)
    again = _round_trip(f)
    assert again == f and Finding.from_json(f.to_json()) == f
    for k, v in f.arrays.items():
        assert again.arrays[k].dtype == v.dtype and again.arrays[k].shape == v.shape
    assert again.meta["layers"] == [0, 1] and isinstance(again.scores["b"], float)
    assert again.seconds == f.seconds


def test_equality_sees_every_difference():
    f = Finding("x", "inconclusive", "r", {"s": 1.0}, {"a": np.array([1.0, 2.0])}, {"m": 1})
    assert f == _round_trip(f)
    for change in ({"reason": "other"}, {"scores": {"s": 2.0}}, {"meta": {"m": 2}},
                   {"arrays": {"a": np.array([1.0, 2.5])}},
                   {"arrays": {"a": np.array([1.0, 2.0], dtype=np.float32)}},
                   {"arrays": {"a": np.array([[1.0, 2.0]])}}, {"seconds": 1.0}):
        assert dataclasses.replace(f, **change) != f, change
    assert "figure" not in {fl.name for fl in dataclasses.fields(Finding)}


def test_a_blocked_finding_draws_nothing():
    assert draw(Finding("logit_lens", "inconclusive", "M1 still answers")) is None
    with pytest.raises(WorkbenchError, match="unknown figure 'nope'"):
        draw(Finding("nope", "inconclusive", "r", arrays={"a": np.zeros(1)}))


# ----- every probe on a small slice of the toy world ---------------------------------------------

@pytest.fixture(scope="module")
def small(toy_facts):
    from workbench.facts import FactSet

    take = {"forget": 12}
    return FactSet(tuple(f for s in toy_facts.splits() for f in toy_facts.split(s).take(
        take.get(s, 40))), "small")


@pytest.fixture(scope="module")
def battery(toy_original, toy_oracle, small):
    from probes import run_battery
    from workbench.controls import output_only_suppressor

    m1 = output_only_suppressor(toy_original, small.forget)
    return m1, run_battery(toy_original, m1, small, oracle=toy_oracle, progress=False)


def test_every_probe_finding_round_trips_and_redraws(battery):
    from probes import PROBES

    _, findings = battery
    assert [f.name for f in findings] == PROBES.names()
    for f in findings:
        again = _round_trip(f)
        assert again == f, f.name
        assert again.meta["thresholds"] == dataclasses.asdict(PROBES[f.name].thresholds())
        assert draw(again) is not None, f.name


def test_attribution_reads_activation_patching_from_the_context(battery, toy_original, small,
                                                                 monkeypatch):
    """In a battery, attribution patching compares with the earlier exact finding instead of
    patching again (no module-level cache)."""
    import probes.attribution as attribution
    from probes import PROBES

    m1, findings = battery
    exact = {f.name: f for f in findings}["activation_patching"]

    def no_patching(*_a, **_k):
        raise AssertionError("attribution patching re-ran exact patching")

    monkeypatch.setattr(attribution, "patch", no_patching)
    ctx = ProbeContext(toy_original, m1, small, findings={"activation_patching": exact})
    f = PROBES["attribution_patching"](ctx)
    np.testing.assert_array_equal(f.arrays["exact_resid_post"], exact.arrays["recovery_resid_post"])
    with pytest.raises(AssertionError, match="re-ran"):  # without it, it must patch itself
        PROBES["attribution_patching"](ProbeContext(toy_original, m1, small))


def test_thresholds_are_taken_and_recorded(battery, toy_original, small):
    from probes.logit_lens import LogitLensThresholds, logit_lens

    m1, findings = battery
    assert {f.name: f for f in findings}["logit_lens"].reading == "suppression-signature"
    strict = LogitLensThresholds(kept_min=2.0)  # no edit keeps twice M0's readout
    f = logit_lens(toy_original, m1, small, thresholds=strict)
    assert f.reading != "suppression-signature"
    assert f.meta["thresholds"]["kept_min"] == 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        strict.kept_min = 0.1  # type: ignore[misc]
    with pytest.raises(WorkbenchError, match="thresholds must be a LogitLensThresholds"):
        logit_lens(toy_original, m1, small, thresholds=object())


def test_context_is_frozen_and_checks_the_device(battery, toy_original, small):
    import torch

    m1, _ = battery
    ctx = ProbeContext(toy_original, m1, small)
    assert ctx.device == torch.device("cpu") and dict(ctx.findings) == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctx.findings["x"] = None  # type: ignore[index]
    with pytest.raises(WorkbenchError, match="is on cpu, not meta"):
        ProbeContext(toy_original, m1, small, device="meta")
