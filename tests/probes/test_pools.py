"""Known-truth pools on the toy world: controls are checked before they are scored, pools resume,
and the shipped calibration reads pools it was never fitted on."""

from __future__ import annotations

import json

import pytest

from probes.calibrate import evaluate
from probes.pools import build_pool, load_pool
from probes.verdict import Calibration, decide
from workbench.errors import WorkbenchError
from workbench.pools import check_validity, people_controls, toy_controls, world_controls

# One control of each truth that builds in seconds, scored with the cheap modules.
QUICK = ["oracle", "identity", "output_hook_100", "name_cut_zero", "noise_3"]
CHEAP = ["behavior_pressure", "logit_lens", "activation_patching", "parameter_restoration",
         "membership", "in_context_recovery"]


def test_validity_rules():
    m0, oracle = {"forget": 1.0, "retain": 1.0}, {"forget": 0.1, "retain": 1.0}
    assert check_validity("suppressed", {"forget": 0.2, "retain": 0.95}, m0, oracle) is None
    assert "did not forget" in check_validity("suppressed", {"forget": 0.4, "retain": 1.0}, m0,
                                              oracle)
    assert "damaged" in check_validity("removed", {"forget": 0.1, "retain": 0.8}, m0, oracle)
    assert "unlearned" in check_validity("not_unlearned", {"forget": 0.5, "retain": 1.0}, m0,
                                         oracle)
    assert "not damaged" in check_validity("damaged", {"forget": 0.1, "retain": 0.9}, m0, oracle)


def test_the_toy_pool_covers_every_truth_with_two_or_more_of_each():
    controls = toy_controls()
    assert len(controls) >= 20 and len({c.name for c in controls}) == len(controls)
    kinds = {}
    for c in controls:
        kinds.setdefault((c.truth, c.kind), []).append(c)
    assert len({k for t, k in kinds if t == "suppressed"}) >= 8
    for truth in ("removed", "suppressed", "not_unlearned", "damaged"):
        assert sum(c.truth == truth for c in controls) >= 2


def test_the_people_pool_covers_every_truth_and_is_chosen_by_world_kind(toyworld):
    from workbench.worlds import World

    controls = people_controls()
    assert len(controls) >= 20 and len({c.name for c in controls}) == len(controls)
    for truth in ("removed", "suppressed", "not_unlearned", "damaged"):
        assert sum(c.truth == truth for c in controls) >= 2
    assert len({c.kind for c in controls if c.truth == "suppressed"}) >= 6
    people = World(toyworld.root, toyworld.original_dir, toyworld.oracle_dir,
                   toyworld.facts_path, toyworld.stats | {"kind": "pretrained"})
    assert [c.name for c in world_controls(people)] == [c.name for c in controls]
    assert [c.name for c in world_controls(toyworld)] == [c.name for c in toy_controls()]


def test_a_control_that_cannot_be_built_is_dropped_with_its_reason(toyworld, tmp_path):
    from workbench.pools import Control

    def fails(_inputs):
        raise WorkbenchError("no name of these people has a token of its own")

    bad = Control("bad_cut", "name_cut", "suppressed", "cannot be built here", fails)
    doc = build_pool(toyworld, tmp_path, controls=[bad], modules=["behavior_pressure"],
                     progress=False)
    (row,) = doc["controls"]
    assert row["status"] == "dropped" and "token of its own" in row["reason"]
    with pytest.raises(WorkbenchError, match="no valid control"):
        load_pool(tmp_path)


def test_shipped_calibration_reads_a_small_pool(toyworld, tmp_path):
    doc = build_pool(toyworld, tmp_path, only=QUICK, modules=CHEAP, progress=False)
    assert [r["status"] for r in doc["controls"]] == ["valid"] * len(QUICK)
    entries = load_pool(tmp_path)
    for e in entries:
        v = decide(e.findings)
        assert v.verdict == e.truth, (e.name, v.summary)
        assert {u.split(":")[0] for u in v.unavailable} >= {"relearning"}  # not run: said
    ev = evaluate(entries, Calibration.load())
    assert ev["accuracy"] == 1.0
    # a second build resumes from disk instead of rebuilding
    again = build_pool(toyworld, tmp_path, only=QUICK, modules=CHEAP, progress=False)
    assert again["controls"] == doc["controls"]
    with pytest.raises(WorkbenchError, match="unknown control"):
        build_pool(toyworld, tmp_path, only=["nope"], progress=False)


def test_pool_json_lists_dropped_controls_with_a_reason(toyworld, tmp_path):
    (tmp_path / "noise_3").mkdir(parents=True)
    (tmp_path / "noise_3" / "control.json").write_text(json.dumps(
        {"name": "noise_3", "kind": "noise", "truth": "damaged", "status": "dropped",
         "reason": "a reason", "accuracy": {"forget": 0.0, "retain": 0.0}}))
    doc = build_pool(toyworld, tmp_path, only=["noise_3"], modules=CHEAP, progress=False)
    assert doc["controls"][0]["reason"] == "a reason"
    with pytest.raises(WorkbenchError, match="no valid control"):
        load_pool(tmp_path)


@pytest.mark.slow
def test_held_out_seed_pool_meets_the_targets(tmp_path):
    """Calibrated on the pool of toy world 0 (the shipped file), judged on the same controls
    built on another world: other people, other trained models."""
    from workbench.toyworld import build_toyworld

    cal = Calibration.load()
    world_seed = 1 if "seed1" not in json.dumps(cal.fitted_on) else 2
    world = build_toyworld(seed=world_seed, progress=False)
    picks = ["oracle", "oracle_wrong_1", "oracle_other_people", "output_hook_30",
             "last_block_npo_0", "last2_refusal_1", "steer_mid_12", "gated_detector_1",
             "name_cut_mean", "in_cell_g64_0",
             "identity", "retain_tuned_40", "noise_3"]
    build_pool(world, tmp_path, only=picks, progress=False)
    ev = evaluate(load_pool(tmp_path), cal)
    assert ev["n"] >= 8
    assert ev["accuracy"] == 1.0, [r for r in ev["rows"] if not r["right"]]
    assert ev["removal_auc"] >= 0.99


def test_robustness_ratio_compares_the_edit_shift_with_the_oracle_shift():
    from probes.robustness import TOLERANCE, ratio

    assert ratio(0.3, 0.3) == 1.0 and ratio(0.0, 0.5) == 1.0  # no more than the oracle
    assert ratio(-0.3, 0.3) == ratio(0.3, 0.3)  # symmetric: a fall counts as a rise
    assert ratio(0.5, 0.0) == pytest.approx(TOLERANCE / (0.5 + TOLERANCE))
    assert ratio(0.8, 0.1) < ratio(0.4, 0.1) < 1.0


def test_robustness_catches_a_figure_that_quantization_moves(toyworld, tmp_path, monkeypatch):
    """Known truth: the in-cell control's answers come back under 4-bit rounding (by
    construction), the oracle's do not, so forget accuracy, which read the edit as gone, is not
    robust to quantization; findings are written into the pool and a rerun resumes."""
    from probes import robustness as rob

    only = ["oracle", "in_cell_g64_0"]
    modules = ["behavior_pressure", "activation_patching"]
    build_pool(toyworld, tmp_path, only=only, modules=modules, progress=False)
    with pytest.raises(WorkbenchError, match="controls robustness"):
        rob.robustness([tmp_path], Calibration.load())
    rob.build_robustness(tmp_path, progress=False)
    for name in only:
        for kind in rob.PERTURBATIONS:
            found = tmp_path / "robustness" / name / kind / "findings"
            assert sorted(p.stem for p in found.glob("*.json")) == sorted(modules)
    table = rob.robustness([tmp_path], Calibration.load(), names=modules)
    assert set(table) == {*modules, "forget_accuracy", "removal_score"}
    for row in table.values():
        for k in rob.PERTURBATIONS:
            assert row[f"n_{k}"] + row[f"unread_{k}"] == 1
    for name in ("forget_accuracy", "removal_score"):  # always read
        assert all(0.0 <= table[name][k] <= 1.0 for k in (*rob.PERTURBATIONS, "robustness"))
    assert table["forget_accuracy"]["quantization"] < 0.2
    assert table["forget_accuracy"]["robustness"] < 0.35

    def no_battery(*_a, **_k):
        raise AssertionError("a resumed build must not score again")

    monkeypatch.setattr(rob, "run_battery", no_battery)
    rob.build_robustness(tmp_path, progress=False)
    with pytest.raises(WorkbenchError, match="perturbation"):
        rob.perturbed(None, "pruning", None)


def test_a_pool_scored_again_with_more_modules_keeps_what_it_has(toyworld, tmp_path,
                                                                 monkeypatch):
    import probes.pools as pools

    build_pool(toyworld, tmp_path, only=["output_hook_100"], modules=["behavior_pressure"],
               progress=False)
    kept = (tmp_path / "output_hook_100" / "findings" / "behavior_pressure.json").read_text()
    ran = []
    real = pools.run_battery

    def spy(*args, cached=None, **kw):
        out = real(*args, cached=cached, **kw)
        ran.extend(f.name for f in out if f.name not in (cached or {}))
        return out

    monkeypatch.setattr(pools, "run_battery", spy)
    doc = build_pool(toyworld, tmp_path, only=["output_hook_100"],
                     modules=["behavior_pressure", "logit_lens"], progress=False)
    assert ran == ["logit_lens"] and doc["controls"][0]["status"] == "valid"
    fdir = tmp_path / "output_hook_100" / "findings"
    assert sorted(p.stem for p in fdir.glob("*.json")) == ["behavior_pressure", "logit_lens"]
    assert (fdir / "behavior_pressure.json").read_text() == kept
