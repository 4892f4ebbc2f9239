"""`workbench unlearn` and `workbench operators` end to end on the toy world."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from apps.cli import app
from workbench.behavior import accuracy_by_split
from workbench.facts import FactSet
from workbench.models import load_subject

runner = CliRunner()


@pytest.fixture(scope="module")
def facts_file(toy_facts, tmp_path_factory):
    return toy_facts.save(tmp_path_factory.mktemp("facts") / "toy.jsonl")


def unlearn(*args: str):
    return runner.invoke(app, ["unlearn", *args])


def test_operators_lists_the_registry():
    res = runner.invoke(app, ["operators", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"ga", "graddiff", "npo", "task_vector"} <= set(rows)
    assert rows["npo"]["family"] == "removal-intended" and rows["npo"]["kind"] == "weights"
    assert ["beta", "float", 0.1] in rows["npo"]["config"]
    table = runner.invoke(app, ["operators"])
    assert table.exit_code == 0 and "removal-intended" in table.stdout


def test_unlearn_chain_end_to_end(toy_original, toy_facts, facts_file, tmp_path):
    out = tmp_path / "edit"
    res = unlearn("--model", toy_original.source, "--facts", str(facts_file), "--operator", "ga",
                  "--then", "npo", "--set", "steps=40", "--set", "npo.steps=5", "--seed", "7",
                  # a recipe that moves the toy model (its lookup is not at the entity's token)
                  "--set", "lr=1e-3", "--set", "positions=all", "--set", "preserve=0",
                  "--set", "layers=0,1,2,3",
                  "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == json.loads((out / "edit.json").read_text())
    assert [c["operator"] for c in doc["chain"]] == ["ga", "npo"]
    assert [c["config"]["steps"] for c in doc["chain"]] == [40, 5]
    assert all(c["seed"] == 7 for c in doc["chain"])
    assert doc["operator"] == "npo" and doc["seed"] == 7
    assert set(doc["before"]) == set(doc["after"]) == set(toy_facts.splits())
    for side in ("before", "after"):
        for row in doc[side].values():
            assert 0.0 <= row["accuracy"] <= 1.0 and row["logprob"] <= 0.0
    assert doc["after"]["forget"]["accuracy"] < doc["before"]["forget"]["accuracy"]
    assert doc["timings"]["chain_total_s"] > 0
    reloaded = accuracy_by_split(load_subject(str(out)), toy_facts)
    assert reloaded["forget"]["accuracy"] == pytest.approx(doc["after"]["forget"]["accuracy"])


def test_unlearn_table_output(toy_original, facts_file, tmp_path):
    res = unlearn("--model", toy_original.source, "--facts", str(facts_file), "-o",
                  "task_vector", "--set", "steps=2", "--out", str(tmp_path / "tv"))
    assert res.exit_code == 0, res.output
    assert "task_vector" in res.stdout and "forget" in res.stdout
    edited = load_subject(str(tmp_path / "tv")).model.state_dict()
    original = toy_original.model.state_dict()
    diff = {k for k in original if not torch.equal(original[k], edited[k])}
    # the default blocks' MLPs and the forget people's embedding rows (an entity-level set)
    assert "model.embed_tokens.weight" in diff
    assert diff - {"model.embed_tokens.weight"} and all(
        ".mlp." in k for k in diff - {"model.embed_tokens.weight"})


@pytest.mark.parametrize("extra, message", [
    (["-o", "nope"], "unknown operator 'nope'"),
    (["-o", "ga", "--set", "lr_max=1"], "no config key"),
    (["-o", "npo", "--set", "beta=high"], "cannot read 'high' as float"),
    (["-o", "ga", "--set", "layers=0,42"], "out of range"),
    (["-o", "ga", "--then", "zzz"], "unknown operator 'zzz'"),
])
def test_unlearn_errors(extra, message, toy_original, facts_file, tmp_path):
    res = unlearn("--model", toy_original.source, "--facts", str(facts_file),
                  "--out", str(tmp_path / "o"), *extra)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()


def test_unlearn_refuses_empty_forget_and_input_overwrite(toy_original, toy_facts, tmp_path):
    no_forget = FactSet(tuple(f for f in toy_facts if f.split != "forget"), "nf")
    path = no_forget.save(tmp_path / "nf.jsonl")
    res = unlearn("--model", toy_original.source, "--facts", str(path), "-o", "ga",
                  "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "forget split is empty" in " ".join(res.output.split())
    res = unlearn("--model", toy_original.source, "--facts", str(path), "-o", "ga",
                  "--out", toy_original.source)
    assert res.exit_code == 2 and "refusing to write" in " ".join(res.output.split())
