"""Fact / FactSet validation, JSONL round trip with file:line:field errors, the built-in set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.errors import FactFileError, WorkbenchError
from workbench.facts import Fact, FactSet, builtin_facts, load_facts

GOOD = {"id": "capital-france", "prompt": "The capital of France is", "answer": " Paris",
        "split": "forget", "paraphrases": ["France's capital is"], "entity": "France",
        "relation": "capital"}


def _line(**changes) -> str:
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...})


def _write(tmp_path: Path, lines: list[str], name: str = "facts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(tmp_path: Path, lines: list[str]) -> str:
    path = _write(tmp_path, lines)
    with pytest.raises(FactFileError) as e:
        FactSet.load(path)
    return str(e.value)


# ----- Fact -----------------------------------------------------------------------------------
def test_fact_rejects_bad_fields():
    with pytest.raises(ValueError, match="answer"):
        Fact("a", "p", "  ", "forget")
    with pytest.raises(ValueError, match="split"):
        Fact("a", "p", " x", "train")
    with pytest.raises(ValueError, match="paraphrases"):
        Fact("a", "p", " x", "forget", paraphrases=("",))


def test_fact_json_round_trip_drops_empty_optionals():
    f = Fact("a", "p", " x", "retain")
    assert f.to_json() == {"id": "a", "prompt": "p", "answer": " x", "split": "retain"}
    g = Fact.from_json(GOOD)
    assert g.paraphrases == ("France's capital is",)
    assert Fact.from_json(g.to_json()) == g


def test_factset_round_trip(tmp_path):
    fs = FactSet((Fact.from_json(GOOD),
                  Fact("b", "The day after Monday is", " Tuesday", "holdout", ("x y",), None,
                       "day-after")), "mine")
    path = fs.save(tmp_path / "sub" / "out.jsonl")
    back = FactSet.load(path)
    assert back.facts == fs.facts
    assert back.name == "out"
    assert len(path.read_text().splitlines()) == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left over


def test_comments_and_blank_lines_are_skipped(tmp_path):
    path = _write(tmp_path, ["# a comment", "", _line()])
    assert len(FactSet.load(path)) == 1


# ----- errors that name file, line and field --------------------------------------------------
def test_bad_json_names_file_and_line(tmp_path):
    msg = _error(tmp_path, [_line(), "{not json"])
    assert "facts.jsonl:2" in msg and "invalid JSON" in msg


def test_missing_answer_names_line_and_field(tmp_path):
    msg = _error(tmp_path, [_line(id="x"), _line(answer=...)])
    assert "facts.jsonl:2" in msg and "'answer'" in msg


def test_empty_answer_names_line_and_field(tmp_path):
    msg = _error(tmp_path, [_line(answer="")])
    assert "facts.jsonl:1" in msg and "'answer'" in msg


def test_unknown_split_names_line_and_value(tmp_path):
    msg = _error(tmp_path, [_line(), _line(id="y"), _line(id="z", split="train")])
    assert "facts.jsonl:3" in msg and "'split'" in msg and "train" in msg


def test_duplicate_id_names_both_lines(tmp_path):
    msg = _error(tmp_path, [_line(), _line(id="other"), _line(prompt="Another prompt")])
    assert "facts.jsonl:3" in msg and "line 1" in msg and "capital-france" in msg


def test_unknown_field_is_named(tmp_path):
    msg = _error(tmp_path, [_line(colour="blue")])
    assert "facts.jsonl:1" in msg and "colour" in msg


@pytest.mark.parametrize("bad", ["France's capital is", 3, {"a": 1}])
def test_non_list_paraphrases_rejected(tmp_path, bad):
    msg = _error(tmp_path, [_line(paraphrases=bad)])
    assert "facts.jsonl:1" in msg and "paraphrases" in msg


def test_non_object_line_rejected(tmp_path):
    msg = _error(tmp_path, ["[1, 2]"])
    assert "facts.jsonl:1" in msg and "JSON object" in msg


@pytest.mark.parametrize("lines", [[""], ["# only a comment", "   "]])
def test_empty_file_rejected(tmp_path, lines):
    msg = _error(tmp_path, lines)
    assert "facts.jsonl" in msg and "empty" in msg


def test_missing_file_rejected(tmp_path):
    with pytest.raises(WorkbenchError, match="not found"):
        FactSet.load(tmp_path / "nope.jsonl")


def test_empty_set_require_nonempty():
    with pytest.raises(FactFileError, match="empty"):
        FactSet((), "none").require_nonempty()


def test_factset_duplicate_ids_in_memory():
    f = Fact.from_json(GOOD)
    with pytest.raises(FactFileError, match="duplicate"):
        FactSet((f, f))


# ----- splits and built-ins -------------------------------------------------------------------
def test_split_selects_and_rejects_unknown():
    facts = tuple(Fact(f"f{i}", f"p{i}", " a", s)
                  for i, s in enumerate(["forget", "retain", "forget", "holdout"]))
    fs = FactSet(facts, "x")
    assert [f.id for f in fs.split("forget")] == ["f0", "f2"]
    assert [f.id for f in fs.retain] == ["f1"]
    assert len(fs.unseen) == 0
    assert fs.splits() == ["forget", "retain", "holdout"]
    with pytest.raises(FactFileError, match="unknown split"):
        fs.split("train")


def test_load_facts_builtin_spellings():
    a = load_facts("builtin:smollm2")
    assert a == builtin_facts("smollm2") == load_facts("smollm2")  # same facts, same name
    assert a.name == "smollm2"
    with pytest.raises(FactFileError, match="no built-in"):
        load_facts("builtin:nope")


def test_builtin_set_shape():
    fs = builtin_facts("smollm2")
    assert len(fs) >= 60
    relations = Counter(f.relation for f in fs)
    assert None not in relations and len(relations) >= 4
    assert fs.splits() == ["forget", "retain", "holdout"]
    for split in ("forget", "retain", "holdout"):
        part = fs.split(split)
        assert len(part) >= 20
        assert {f.relation for f in part} == set(relations), f"a relation is missing in {split}"
    prompts = [f.prompt for f in fs]
    assert len(set(prompts)) == len(prompts)
    for f in fs:
        assert f.answer.startswith(" ") and f.answer.strip() == f.answer[1:]
        assert f.entity and len(f.paraphrases) >= 1
        assert f.prompt not in f.paraphrases
        assert f.answer.strip().lower() not in f.prompt.lower().split()


def test_builtin_set_round_trips(tmp_path):
    fs = builtin_facts("smollm2")
    assert FactSet.load(fs.save(tmp_path / "b.jsonl")).facts == fs.facts


# ----- CLI ------------------------------------------------------------------------------------
def _flat(text: str) -> str:
    """CLI output without whitespace (rich wraps long paths at the terminal width)."""
    return "".join(text.split())


def test_cli_validate_good_and_bad(tmp_path):
    from apps.cli import app

    runner = CliRunner()
    good = _write(tmp_path, [_line(), _line(id="b", prompt="q", split="retain")], "good.jsonl")
    r = runner.invoke(app, ["facts", "validate", str(good)])
    assert r.exit_code == 0, r.output
    assert "2facts" in _flat(r.output)

    bad = _write(tmp_path, [_line(), _line(id="b", prompt="q"), _line(id="c", split="nope")],
                 "bad.jsonl")
    r = runner.invoke(app, ["facts", "validate", str(bad)])
    assert r.exit_code != 0
    assert "bad.jsonl:3" in _flat(r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit)
