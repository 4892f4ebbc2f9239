"""An audit writes a complete run directory, resumes from it, and refuses bad pairs up front."""

from __future__ import annotations

import json

import pytest

from probes.audit import AuditRun, run_audit, tier_modules
from workbench.controls import output_only_suppressor
from workbench.errors import WorkbenchError

MODULES = ["behavior_pressure", "activation_patching", "parameter_restoration"]


def test_audit_writes_the_run_directory_and_resumes(toy_original, toy_oracle, toy_facts, tmp_path):
    m1 = output_only_suppressor(toy_original, toy_facts.forget)
    run = run_audit(toy_original, m1, toy_facts, tmp_path, oracle=toy_oracle, modules=MODULES,
                    progress=False)
    assert run.verdict.verdict == "suppressed"
    for name in ("manifest.json", "verdict.json", "report.json", "behaviour.json"):
        assert (tmp_path / name).is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("verdict", "removal_score", "confidence", "evidence", "findings", "timings",
                "versions", "seeds", "behaviour", "unavailable", "unweighed"):
        assert key in report
    assert report["behaviour"]["M1"]["forget"] < report["behaviour"]["M0"]["forget"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["specs"]) == {"M0", "M1", "Mr"} and manifest["resumed"] == []
    assert manifest["specs"]["M0"]["hash"] != manifest["specs"]["M1"]["hash"]

    # an interrupted run: one finding lost; the rerun computes only that one, same verdict
    (tmp_path / "findings" / "parameter_restoration.json").unlink()
    again = run_audit(toy_original, m1, toy_facts, tmp_path, oracle=toy_oracle, modules=MODULES,
                      progress=False)
    resumed = json.loads((tmp_path / "manifest.json").read_text())["resumed"]
    assert resumed == ["activation_patching", "behavior_pressure"]
    assert again.verdict.verdict == run.verdict.verdict
    assert AuditRun.open(tmp_path).verdict == again.verdict

    # other inputs under the same directory: nothing stale is reused
    run_audit(toy_original, toy_oracle, toy_facts, tmp_path, oracle=toy_oracle,
              modules=MODULES, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["resumed"] == []


def test_audit_refuses_bad_inputs_before_any_work(toy_original, toy_facts, tiny, tmp_path):
    with pytest.raises(WorkbenchError, match="tier"):
        tier_modules("medium")
    with pytest.raises(WorkbenchError):
        run_audit(toy_original, tiny, toy_facts, tmp_path, modules=MODULES, progress=False)
    assert not (tmp_path / "findings").exists()


def test_the_quick_tier_runs_the_decisive_attack(toy_original, toy_oracle, toy_facts, tmp_path):
    """An edit that moved every weight only inside its 4-bit rounding cell (so rounding gives
    the forgotten answers back by construction): the quick tier's one attack is quantization,
    and its recovery decides the verdict, whatever the cheap modules read."""
    from workbench.controls import in_cell_suppressor

    assert "quantization" in tier_modules("quick")
    m1 = in_cell_suppressor(toy_original, toy_facts.forget, toy_facts.retain, group_size=64,
                            steps=40, rate=0.2)
    run = run_audit(toy_original, m1, toy_facts, tmp_path, oracle=toy_oracle, tier="quick",
                    progress=False)
    q = run.findings["quantization"]
    assert q.reading == "suppression-signature", q.reason
    assert run.verdict.verdict == "suppressed" and run.verdict.removal_score < 0.5
    assert "quantization brought back" in run.verdict.summary and "decisive" in \
        run.verdict.summary
