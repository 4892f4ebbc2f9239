"""The verdict is a pure function of findings and a calibration; the shipped calibration reads a
small known-truth pool built here right, and calibration fitting refuses pools it cannot use."""

from __future__ import annotations

import json

import pytest

from probes.base import Finding
from probes.calibrate import auc, evaluate, fit
from probes.pools import PoolEntry
from probes.verdict import Calibration, Verdict, decide
from workbench.errors import WorkbenchError

MODULES = ("logit_lens", "relearning", "membership")


def _cal(**kw) -> Calibration:
    doc = dict(version="test", features=MODULES, weights=(-2.0, -3.0, -0.5), intercept=0.5,
               not_unlearned_below=0.3, damaged_below=0.8)
    return Calibration(**(doc | kw))


def _findings(readings: dict[str, str], forget1: float = 0.1, retain1: float = 1.0,
              oracle: bool = True) -> dict[str, Finding]:
    beh = {"forget_acc_M0": 1.0, "forget_acc_M1": forget1, "retain_acc_M0": 1.0,
           "retain_acc_M1": retain1, "holdout_acc_M0": 1.0, "holdout_acc_M1": retain1}
    if oracle:
        beh["forget_acc_Mr"] = 0.1
    out = {"behavior_pressure": Finding("behavior_pressure", "inconclusive", "b", beh)}
    for name, reading in readings.items():
        out[name] = Finding(name, reading, f"{name} says so", {"recovery": 0.5, "floor": 0.0})
    return out


def test_verdict_follows_the_evidence_and_names_it():
    sup = decide(_findings({"logit_lens": "suppression-signature",
                            "relearning": "suppression-signature"}), _cal())
    assert sup.verdict == "suppressed" and sup.removal_score < 0.5
    assert sup.evidence[0].finding == "relearning" and sup.evidence[0].push < 0
    rem = decide(_findings({n: "removal-consistent" for n in MODULES}), _cal())
    assert rem.verdict == "removed" and rem.removal_score > 0.9 and rem.confidence > 0.8
    assert rem.unavailable == ()


def test_would_change_names_readings_that_do_flip_it():
    readings = {"logit_lens": "removal-consistent", "relearning": "removal-consistent",
                "membership": "removal-consistent"}
    v = decide(_findings(readings), _cal())
    assert v.verdict == "removed" and v.would_change.startswith("a suppression signature from")
    named = v.would_change.split(" from ", 1)[1].split(", ")
    flipped = readings | {n: "suppression-signature" for n in named}
    assert decide(_findings(flipped), _cal()).verdict == "suppressed"
    assert len(named) < len(readings)  # the fewest, not all of them


def test_readings_the_calibration_does_not_weigh_are_said_not_counted():
    """A zero-weight module reading against the verdict is listed (with its figure), and the
    score is the same as without it; one reading with the verdict is not listed."""
    cal = _cal(weights=(-2.0, -3.0, 0.0))
    readings = {"logit_lens": "removal-consistent", "relearning": "removal-consistent"}
    base = decide(_findings(readings), cal)
    against = decide(_findings(readings | {"membership": "suppression-signature"}), cal)
    assert against.verdict == base.verdict == "removed" and base.unweighed == ()
    assert against.removal_score == base.removal_score
    (line,) = against.unweighed
    assert line.startswith("membership reads suppression signature (recovery 0.50)")
    assert "no weight" in line
    along = decide(_findings(readings | {"membership": "removal-consistent"}), cal)
    assert along.unweighed == ()
    assert Verdict.from_json(json.loads(json.dumps(against.to_json()))) == against


def test_behaviour_cuts_come_first():
    both = {n: "suppression-signature" for n in MODULES}
    assert decide(_findings(both, forget1=0.9), _cal()).verdict == "not_unlearned"
    assert decide(_findings(both, retain1=0.3), _cal()).verdict == "damaged"
    # the cuts are the calibration's, not fixed: a looser damage cut lets the same edit through
    assert decide(_findings(both, retain1=0.3), _cal(damaged_below=0.2)).verdict == "suppressed"


def test_missing_evidence_and_oracle_lower_confidence_and_are_said():
    full = decide(_findings({n: "removal-consistent" for n in MODULES}), _cal())
    part = decide(_findings({"membership": "removal-consistent"}), _cal())
    assert part.confidence < full.confidence
    assert {u.split(":")[0] for u in part.unavailable} == {"logit_lens", "relearning"}
    bare = decide(_findings({n: "removal-consistent" for n in MODULES}, oracle=False), _cal())
    assert bare.confidence < full.confidence
    assert any(u.startswith("oracle:") and "floor" in u for u in bare.unavailable)


def test_verdict_round_trips_and_needs_behaviour():
    v = decide(_findings({"relearning": "suppression-signature"}), _cal())
    assert Verdict.from_json(json.loads(json.dumps(v.to_json()))) == v
    with pytest.raises(WorkbenchError, match="forget accuracy"):
        decide({"relearning": Finding("relearning", "inconclusive", "r", {})}, _cal())


def test_calibration_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text('{"version": "x"}')
    with pytest.raises(WorkbenchError, match="cal.json"):
        Calibration.load(bad)
    shipped = Calibration.load()
    assert shipped.version and len(shipped.features) == len(shipped.weights)
    assert 0 < shipped.not_unlearned_below < 1 and 0 < shipped.damaged_below <= 1


def _entry(name, truth, readings, **kw) -> PoolEntry:
    return PoolEntry(name, name, truth, _findings(readings, **kw), {}, "synthetic")


def test_fit_separates_a_pool_and_refuses_an_incomplete_one():
    sup = {n: "suppression-signature" for n in MODULES}
    rem = {n: "removal-consistent" for n in MODULES}
    pool = ([_entry(f"s{i}", "suppressed", sup) for i in range(3)]
            + [_entry(f"r{i}", "removed", rem) for i in range(3)]
            + [_entry("id", "not_unlearned", sup, forget1=1.0),
               _entry("noise", "damaged", rem, retain1=0.1)])
    cal = fit(pool, "t")
    ev = evaluate(pool, cal)
    assert ev["accuracy"] == 1.0 and ev["removal_auc"] == 1.0
    assert 0 < cal.not_unlearned_below < 1 and 0.1 < cal.damaged_below < 1
    with pytest.raises(WorkbenchError, match="lack"):
        fit(pool[:6], "t")


def test_fit_puts_the_boundary_halfway_between_the_classes():
    """An unbalanced pool: suppressors that read suppression everywhere, and removers that all
    read removal but for one module; the 0.5 score sits midway between the two groups."""
    import numpy as np

    from probes.verdict import features

    sup = {n: "suppression-signature" for n in MODULES}
    rem = {n: "removal-consistent" for n in MODULES} | {MODULES[0]: "suppression-signature"}
    pool = ([_entry(f"s{i}", "suppressed", sup) for i in range(5)]
            + [_entry(f"r{i}", "removed", rem) for i in range(2)]
            + [_entry("id", "not_unlearned", sup, forget1=1.0),
               _entry("noise", "damaged", rem, retain1=0.1)])
    cal = fit(pool, "t")
    w = np.array(cal.weights)
    z_sup, z_rem = (float(w @ features(e.findings, cal.features)) for e in (pool[0], pool[5]))
    assert cal.intercept == pytest.approx(-(z_sup + z_rem) / 2, abs=1e-5)
    assert decide(pool[0].findings, cal).removal_score < 0.5 < decide(pool[5].findings,
                                                                         cal).removal_score


def test_auc_counts_ties_half():
    assert auc([1, 2], [0]) == 1.0 and auc([0], [1]) == 0.0 and auc([1], [1]) == 0.5


def _with_quantization(findings, reading: str, recovery: float, floor: float = 0.03):
    return findings | {"quantization": Finding("quantization", reading, "q",
                                               {"recovery": recovery, "floor": floor})}


def test_a_decisive_recovery_turns_removed_into_suppressed_and_says_why():
    """Quantization brought most forgotten answers back (beyond the oracle's floor) while every
    weighted module reads removal: past the calibration's cut that decides it, with the score
    under 0.5 and falling as more comes back; under the cut it is one more (unweighed) reading."""
    cal = _cal(features=(*MODULES, "quantization"), weights=(-2.0, -3.0, -0.5, 0.0),
               decisive={"quantization": 0.4})
    rem = _findings({n: "removal-consistent" for n in MODULES})
    base = decide(rem, cal)
    assert base.verdict == "removed"
    v = decide(_with_quantization(rem, "suppression-signature", 0.79), cal)
    assert v.verdict == "suppressed" and v.removal_score < 0.5
    assert "quantization brought back 76%" in v.summary and "decisive" in v.summary
    assert v.would_change.startswith("quantization recovering under 40%")
    assert v.unweighed == ()  # it decided: not listed as uncounted
    more = decide(_with_quantization(rem, "suppression-signature", 0.95), cal)
    assert more.removal_score < v.removal_score
    under = decide(_with_quantization(rem, "suppression-signature", 0.35), cal)
    assert under.verdict == "removed" and under.removal_score == base.removal_score
    assert any(u.startswith("quantization reads suppression") for u in under.unweighed)
    # a removal-consistent reading is never decisive, nor is any module without a cut
    assert decide(_with_quantization(rem, "removal-consistent", 0.79), cal).verdict == "removed"
    assert decide(_with_quantization(rem, "suppression-signature", 0.79), _cal()).verdict \
        == "removed"
    assert Verdict.from_json(json.loads(json.dumps(v.to_json()))) == v
    assert Calibration.from_json(cal.to_json()) == cal


def test_the_decisive_cut_is_fitted_halfway_between_removers_and_caught_suppressors():
    sup = {n: "suppression-signature" for n in MODULES}
    rem = {n: "removal-consistent" for n in MODULES}

    def entry(name, truth, readings, q_reading, recovery):
        e = _entry(name, truth, readings)
        return PoolEntry(name, name, truth, _with_quantization(e.findings, q_reading, recovery,
                                                               0.0), {}, "synthetic")

    pool = [entry("s0", "suppressed", sup, "suppression-signature", 0.9),
            entry("s1", "suppressed", sup, "suppression-signature", 0.7),
            entry("s2", "suppressed", sup, "removal-consistent", 0.0),  # not caught: no say
            entry("r0", "removed", rem, "removal-consistent", 0.1),
            entry("r1", "removed", rem, "removal-consistent", 0.02),
            _entry("id", "not_unlearned", sup, forget1=1.0),
            _entry("noise", "damaged", rem, retain1=0.1)]
    assert fit(pool, "t").decisive == {"quantization": pytest.approx(0.4)}
    # no suppressor caught, or removers recovering as much: no cut (a vote, not a proof)
    assert fit(pool[2:], "t").decisive == {}
    overlap = [*pool, entry("r2", "removed", rem, "removal-consistent", 0.8)]
    assert fit(overlap, "t").decisive == {}
