"""`workbench audit` on a checkpoint pair the workbench never saw (edited with plain
transformers here), its report opened in a real browser, and the errors it gives up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apps.cli import app

MODULES = ["behavior_pressure", "activation_patching", "parameter_restoration"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _hand_edited(toyworld, out: Path) -> Path:
    """The toy original with the forget people's name rows of the input embedding zeroed: a
    few lines of plain transformers, nothing from the workbench."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toyworld.original_dir)
    model = AutoModelForCausalLM.from_pretrained(toyworld.original_dir)
    names = {f.entity for f in toyworld.facts().forget}
    ids = sorted({i for n in names for i in tok(n, add_special_tokens=False)["input_ids"]})
    with __import__("torch").no_grad():
        model.get_input_embeddings().weight[ids] = 0.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_audit_cli_on_a_pair_edited_by_hand(toyworld, tmp_path):
    edited = _hand_edited(toyworld, tmp_path / "edited")
    out = tmp_path / "run"
    args = ["audit", "--original", str(toyworld.original_dir), "--edited", str(edited),
            "--oracle", str(toyworld.oracle_dir), "--facts", str(toyworld.facts_path),
            "--out", str(out), *(x for m in MODULES for x in ("--module", m))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    # the blocks still hold the facts; restoring the embedding rows gives them back
    assert report["verdict"] == "suppressed", report["summary"]
    assert report["behaviour"]["M1"]["forget"] < 0.5 < report["behaviour"]["M0"]["forget"]
    assert "workbench audit" in report["reproduce"] and str(edited) in report["reproduce"]
    html = (out / "report.html").read_text()
    assert report["verdict"].upper() in html and "Plotly" in html
    _check_in_browser(out / "report.html", report["verdict"].upper())


def test_audit_cli_in_bfloat16_reads_the_same_truth(toyworld, tmp_path):
    """The GPU's default precision, run on the CPU: the hand-edited suppressor still reads
    suppressed, and the run says which precision it used (and its command repeats it)."""
    edited = _hand_edited(toyworld, tmp_path / "edited")
    out = tmp_path / "run"
    args = ["audit", "--original", str(toyworld.original_dir), "--edited", str(edited),
            "--oracle", str(toyworld.oracle_dir), "--facts", str(toyworld.facts_path),
            "--out", str(out), "--dtype", "bfloat16", "--device", "cpu",
            *(x for m in MODULES for x in ("--module", m))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["placement"] == {"device": "cpu", "dtype": "bfloat16", "device_map": None}
    assert report["verdict"] == "suppressed", report["summary"]
    assert "--dtype bfloat16" in report["reproduce"]


def test_audit_cli_unlearns_then_audits(toyworld, tmp_path):
    """`--model` and `--operator`: the edit is made, saved in the run directory and audited; a
    steering hook leaves every weight as it was, so the knowledge is inside: suppressed."""
    out = tmp_path / "run"
    args = ["audit", "--model", str(toyworld.original_dir), "--operator", "steer",
            "--set", "coef=10", "--oracle", str(toyworld.oracle_dir), "--facts",
            str(toyworld.facts_path), "--out", str(out),
            *(x for m in MODULES for x in ("--module", m))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    edit = json.loads((out / "edit" / "edit.json").read_text())
    assert edit["chain"][-1]["operator"] == "steer"
    assert report["verdict"] == "suppressed", report["summary"]
    assert report["behaviour"]["M1"]["forget"] < 0.5 < report["behaviour"]["M0"]["forget"]
    assert report["reproduce"].startswith("workbench unlearn") and "coef=10.0" in report["reproduce"]


@pytest.mark.parametrize("extra,message", [
    (["--operator", "steer"], "--operator needs --model"),
    (["--operator", "steer", "--model", "m", "--edited", "e"], "drop --original and --edited"),
    (["--operator", "nope", "--model", "m"], "nope"),
    (["--operator", "steer", "--model", "m", "--set", "coef"], "key=value"),
    (["--operator", "steer", "--model", "m", "--dtype", "bfloat16"], "float32"),
    (["--model", "m"], "go with --operator"),
    (["--original", "m"], "give --original and --edited"),
])
def test_audit_cli_option_errors_are_one_line(tmp_path, extra, message):
    res = CliRunner().invoke(app, ["audit", "--facts", "smollm2", "--out", str(tmp_path / "r"),
                                   *extra])
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()


def _check_in_browser(page_path: Path, text: str) -> None:
    assert Path(CHROMIUM).exists(), ("the browser check needs Debian's chromium: `make setup` "
                                     "installs it as root, else `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(page_path.as_uri())
        assert text in page.locator("#verdict").inner_text()
        page.wait_for_selector(".plotly-graph-div", timeout=20_000)
        page.screenshot(path=str(page_path.with_suffix(".png")), full_page=True)
        browser.close()


@pytest.mark.parametrize("extra,message", [
    (["--tier", "medium"], "unknown tier"),
    (["--module", "nope"], "unknown analysis module"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--device", "gpu7"], "unknown device 'gpu7'"),
])
def test_audit_cli_errors_are_one_line(toyworld, tmp_path, extra, message):
    args = ["audit", "--original", str(toyworld.original_dir), "--edited",
            str(toyworld.oracle_dir), "--facts", str(toyworld.facts_path), "--out",
            str(tmp_path / "run"), *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output
