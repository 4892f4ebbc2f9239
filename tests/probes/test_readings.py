"""The read-out modules (behaviour, logit lens, linear probes, clusters, signal) read the control
edits correctly on the toy world."""

from __future__ import annotations

import numpy as np
import pytest

from probes import available, get_probe, run_battery
from probes.logit_lens import answer_rank_by_layer
from workbench.controls import identity_edit, output_only_suppressor
from workbench.errors import IncompatibleSubjectsError, WorkbenchError

READOUTS = ("behavior_pressure", "logit_lens", "linear_probes", "clusters", "signal")


@pytest.fixture(scope="module")
def suppressor(toy_original, toy_facts):
    return output_only_suppressor(toy_original, toy_facts.forget)


@pytest.fixture(scope="module")
def controls(toy_original, toy_oracle, toy_facts, suppressor):
    """Every finding of the read-out modules for the three controls (with the oracle as reference)."""
    cases = {"suppressor": suppressor, "oracle": toy_oracle,
             "identity": identity_edit(toy_original)}
    return {name: {f.name: f for f in run_battery(toy_original, m1, toy_facts, oracle=toy_oracle,
                                                   modules=READOUTS, progress=False)}
            for name, m1 in cases.items()}


def test_registry_lists_the_readout_modules():
    assert set(READOUTS) <= set(available())
    with pytest.raises(WorkbenchError, match="unknown analysis module"):
        get_probe("nope")


@pytest.mark.parametrize("module", ["logit_lens", "linear_probes"])
def test_suppressor_shows_the_signature(controls, module):
    assert controls["suppressor"][module].reading == "suppression-signature"


@pytest.mark.parametrize("module", READOUTS)
def test_oracle_is_never_suppression(controls, module):
    assert controls["oracle"][module].reading in ("removal-consistent", "inconclusive")


@pytest.mark.parametrize("module", ["logit_lens", "linear_probes"])
def test_oracle_without_reference_reads_removal(toy_original, toy_oracle, toy_facts, module):
    f = get_probe(module)(toy_original, toy_oracle, toy_facts)
    assert f.reading == "removal-consistent", f.reason


@pytest.mark.parametrize("module", READOUTS)
def test_identity_is_not_suppression(controls, module):
    f = controls["identity"][module]
    assert f.reading == "inconclusive"
    assert "still answers" in f.reason


def test_lens_sees_the_answer_inside_the_suppressor(controls):
    f = controls["suppressor"]["logit_lens"]
    np.testing.assert_array_equal(f.arrays["rank_M0"], f.arrays["rank_M1"])
    # the model no longer says the answers (the suppressor lowers every forget answer value, so
    # among the relation's values the right one may still lead: output_read_M1 is not ~0)
    assert f.scores["output_read_M0"] > 0.9 and f.scores["forget_acc_M1"] < 0.05
    assert f.scores["late_read_M1"] - f.scores["late_read_Mr"] > 0.5


def test_probes_decode_forget_from_suppressor_not_oracle(controls):
    s, o = controls["suppressor"]["linear_probes"], controls["oracle"]["linear_probes"]
    assert s.scores["late_transfer_M1"] == s.scores["late_M0"]
    assert o.scores["late_fresh_M1"] < s.scores["late_fresh_M1"] - 0.3


def test_behaviour_finds_the_suppressor_trigger(controls):
    f = controls["suppressor"]["behavior_pressure"]
    assert f.scores["forget_acc_M1"] <= 0.02 and f.scores["forget_acc_M0"] > 0.8
    assert f.scores["mixed_trigger"] > 0.15
    assert f.reading == "suppression-signature"


def test_clusters_and_signal_see_identical_internals_in_the_suppressor(controls):
    c, s = controls["suppressor"]["clusters"], controls["suppressor"]["signal"]
    assert c.scores["min_cka_forget"] > 0.999 and c.scores["max_sep_gain"] <= 1e-6
    assert s.scores["max_drag_excess"] <= 1e-6 and s.scores["max_norm_inflation"] <= 1e-6
    assert s.scores["max_detect_fh_M1"] == s.scores["max_detect_fh_M0"]
    # an output-only edit leaves no internal gate to find
    assert c.reading == s.reading == "inconclusive"


def test_oracle_has_no_forget_cluster_or_detector(controls, toy_facts):
    from probes.clusters import ClustersThresholds
    from probes.signal import SignalThresholds

    SEP_GAIN, DET_MIN = ClustersThresholds().sep_gain, SignalThresholds().det_min
    c, s = controls["oracle"]["clusters"], controls["oracle"]["signal"]
    assert c.scores["min_cka_forget"] < 0.99  # a different network...
    assert c.scores["max_sep_gain"] < SEP_GAIN  # ...that sets no forget cluster apart
    # The oracle never trained on the forget people, so it *can* tell them from holdout people
    # (their names are unfamiliar), but not from never-seen people: no gate, no signal. The
    # detector's accuracy is plain accuracy over unequal classes (twice as many unseen people),
    # so "cannot tell" means no better than a constant guess of the larger class, not 0.5.
    n_f, n_u = len(toy_facts.forget), len(toy_facts.split("unseen"))
    guess = max(n_f, n_u) / (n_f + n_u)
    assert s.scores["late_detect_fu_M1"] <= guess + 0.05, (s.scores, guess)
    assert s.scores["late_detect_fu_M1"] < s.scores["late_detect_fu_M0"]
    assert s.scores["max_detect_excess"] <= DET_MIN and s.reading != "suppression-signature"


def test_findings_carry_figures_and_json(controls):
    import json

    from apps.figures import draw
    from probes.base import Finding

    for f in controls["suppressor"].values():
        assert f.reason
        assert f.to_json()["reading"] == f.reading
        again = Finding.from_json(json.loads(json.dumps(f.to_json())))
        assert again == f and again.meta["thresholds"]
        assert draw(again) is not None


def test_answer_rank_by_layer_shape(toy_original, toy_facts):
    ranks = answer_rank_by_layer(toy_original, toy_facts.forget.take(7))
    assert ranks.shape == (toy_original.n_layers, 7)
    assert (ranks[-1] == 0).mean() > 0.8  # the last layer is the model's own answer


def test_incompatible_subjects_are_refused(toy_original, toy_facts, tiny):
    with pytest.raises(IncompatibleSubjectsError):
        get_probe("logit_lens")(toy_original, tiny, toy_facts)
