"""The basic `workbench` commands: help, models, eval (JSON), and clear errors on bad input."""

from __future__ import annotations

import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from apps.cli import app

runner = CliRunner()


def _flat(text: str) -> str:
    """Output without whitespace (rich wraps long lines at the terminal width)."""
    return "".join(text.split())


def _command_paths() -> list[list[str]]:
    """Every command and sub-command path of the app, including plugin groups."""
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, prefix + [name])

    walk(get_command(app), [])
    return paths


def test_help_for_every_command():
    paths = _command_paths()
    assert ["eval"] in paths and ["models"] in paths and ["facts", "validate"] in paths
    for path in paths:
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, f"workbench {' '.join(path)} --help: {r.output}"
        assert "Usage" in r.output


def test_models_lists_bundled():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    assert "smollm2-135m" in r.output


def test_eval_missing_fact_file_is_a_clear_error():
    r = runner.invoke(app, ["eval", "--facts", "/nonexistent.jsonl", "--json"])
    assert r.exit_code != 0
    assert "/nonexistent.jsonl" in _flat(r.output) and "notfound" in _flat(r.output)
    assert "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)  # a typer.Exit, not an escaped exception


def test_eval_bad_model_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["eval", "--model", str(tmp_path / "no-such-model"), "--json"])
    assert r.exit_code != 0
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


def test_facts_show_builtin():
    r = runner.invoke(app, ["facts", "show", "smollm2"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "capital-france" in r.output


@pytest.mark.usefixtures("bundled")  # loads and caches the model once for the session
def test_eval_json_on_builtin_set():
    from workbench.facts import builtin_facts

    r = runner.invoke(app, ["eval", "--model", "smollm2-135m", "--facts", "smollm2", "--json",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    fs = builtin_facts("smollm2")
    assert list(summary) == ["forget", "retain", "holdout"]
    for split, row in summary.items():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["accuracy"] == 1.0, f"{split}: {row}"
        assert row["logprob"] < 0
        assert row["n"] == len(fs.split(split))


def test_eval_json_on_own_file(tmp_path, bundled):
    """A user's file with a wrong answer in one split: accuracy drops there only."""
    from workbench.facts import Fact, FactSet

    fs = FactSet((Fact("a", "The capital of France is", " Paris", "forget"),
                  Fact("b", "The capital of Italy is", " Rome", "retain"),
                  Fact("c", "The capital of Germany is", " Madrid", "retain")), "mine")
    path = fs.save(tmp_path / "mine.jsonl")
    r = runner.invoke(app, ["eval", "--facts", str(path), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["forget"]["accuracy"] == 1.0
    assert summary["retain"]["accuracy"] == 0.5
    assert set(summary) == {"forget", "retain"}


def test_cli_probe_prints_readings(toyworld):
    import json

    from typer.testing import CliRunner

    from apps.cli import app

    args = ["probe", "--original", str(toyworld.original_dir), "--edited",
            str(toyworld.oracle_dir), "--facts", str(toyworld.facts_path),
            "--module", "logit_lens", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("["):])
    assert [f["name"] for f in doc] == ["logit_lens"]
    assert doc[0]["reading"] == "removal-consistent"
    bad = CliRunner().invoke(app, args[:-3] + ["--module", "nope"])
    assert bad.exit_code == 2 and "unknown analysis module" in bad.output
