"""`workbench controls build`, `controls robustness`, `calibrate` and `meta-eval` end to end on a
tiny toy-world pool (one control of each truth, one cheap module)."""

from __future__ import annotations

import json

from conftest import toy_seed
from typer.testing import CliRunner

from apps.cli import app

runner = CliRunner()
CONTROLS = ["oracle", "output_hook_100", "identity", "noise_3"]


def test_pool_calibration_and_meta_evaluation_with_robustness(toyworld, tmp_path):
    pool, cal, report = tmp_path / "pool", tmp_path / "cal.json", tmp_path / "meta.json"
    only = [a for c in CONTROLS for a in ("--only", c)]
    r = runner.invoke(app, ["controls", "build", "--seed", str(toy_seed()), "--out", str(pool),
                            *only, "--module", "behavior_pressure"])
    assert r.exit_code == 0, r.output
    assert json.loads((pool / "pool.json").read_text())["modules"] == ["behavior_pressure"]
    r = runner.invoke(app, ["calibrate", "--pool", str(pool), "--out", str(cal)])
    assert r.exit_code == 0, r.output
    assert json.loads(cal.read_text())["features"] == ["behavior_pressure"]
    r = runner.invoke(app, ["meta-eval", "--pool", str(pool), "--calibration", str(cal)])
    assert r.exit_code == 0, r.output
    assert "no pool has perturbed findings" in r.output  # said, not silently left out
    r = runner.invoke(app, ["controls", "robustness", "--pool", str(pool),
                            "--only", "output_hook_100"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["meta-eval", "--pool", str(pool), "--calibration", str(cal),
                            "--out", str(report)])
    assert r.exit_code == 0, r.output
    assert "robustness" in r.output and "forget_accuracy" in r.output
    doc = json.loads(report.read_text())
    assert doc["evaluation"]["n"] == len(CONTROLS)
    rob = doc["robustness"]
    assert set(rob) == {"behavior_pressure", "forget_accuracy", "removal_score"}
    # an output hook survives both perturbations (it is not in the weights): its forget
    # accuracy stays at zero, no further from it than the oracle's drifts
    assert rob["forget_accuracy"]["robustness"] > 0.5
    r = runner.invoke(app, ["controls", "robustness", "--pool", str(pool), "--only", "nope"])
    assert r.exit_code != 0 and "nope" in r.output
    r = runner.invoke(app, ["controls", "robustness", "--pool", str(tmp_path / "none")])
    assert r.exit_code != 0 and "pool.json" in r.output
