"""Configs describe themselves: every field has a doc, choices are `Literal`s that the field specs
report, and bad values are refused when the config is built, before any model loads."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from apps.cli import app
from saes.train import SAETrainConfig
from workbench.errors import WorkbenchError
from workbench.operators import OPERATORS, config_fields, get_operator, make_config
from workbench.options import FieldSpec, check_fields, field_specs, option, parse_value

NAMES = sorted(OPERATORS)
LITERALS = [(name, key, choices) for name in NAMES for key, choices in
            ((s.name, s.choices) for s in config_fields(name)) if choices]


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("a config check loaded a model")

    monkeypatch.setattr("workbench.models.load_subject", refuse)


def test_the_registry_holds_the_operators_this_file_checks():
    assert {"ga", "graddiff", "npo", "task_vector", "rmu", "prune", "steer", "prompt",
            "sae_clamp"} <= set(NAMES)


@pytest.mark.parametrize("cls", [*(OPERATORS[n].config_cls for n in NAMES), SAETrainConfig])
def test_every_field_has_a_one_line_doc(cls):
    for spec in field_specs(cls):
        assert isinstance(spec, FieldSpec)
        assert spec.doc.strip() and "\n" not in spec.doc, f"{cls.__name__}.{spec.name}"


@pytest.mark.parametrize("name", NAMES)
def test_field_specs_report_every_literal_and_the_defaults(name):
    cls = get_operator(name).config_cls
    hints = typing.get_type_hints(cls)
    default = make_config(name)
    for spec in config_fields(name):
        lit = [a for a in (hints[spec.name], *typing.get_args(hints[spec.name]))
               if typing.get_origin(a) is typing.Literal]
        assert spec.choices == (typing.get_args(lit[0]) if lit else None), spec.name
        assert spec.default == getattr(default, spec.name)
        if spec.choices:
            assert spec.default in spec.choices and spec.type == "str"


def test_the_choice_fields():
    choices = {(n, k): c for n, k, c in LITERALS}
    assert choices[("steer", "mode")] == ("add", "ablate")
    assert choices[("steer", "gate")] == ("none", "keys", "logreg", "meandiff")
    assert choices[("npo", "retain_loss")] == ("none", "nll", "kl")
    assert choices[("rmu", "lr_schedule")] == ("constant", "cosine")
    assert choices[("prune", "score")] == ("ratio", "diff")
    assert choices[("prompt", "style")] == ("entities", "generic", "custom")
    assert choices[("sae_clamp", "arch")] == ("standard", "topk", "jumprelu")
    for name in ("ga", "graddiff", "npo", "task_vector"):
        assert {"params", "positions", "rows"} <= {k for n, k, _ in LITERALS if n == name}


@pytest.mark.parametrize("name,key,choices", LITERALS)
def test_a_bad_choice_is_refused_before_any_model_loads(name, key, choices):
    for overrides in ({key: "bogus"}, [f"{key}=bogus"]):
        with pytest.raises(WorkbenchError) as err:
            make_config(name, overrides)
        msg = str(err.value)
        assert f"operator {name!r}" in msg and key in msg and "'bogus'" in msg, msg
        assert all(str(c) in msg for c in choices), msg
    for c in choices:  # and every listed choice is accepted
        assert getattr(make_config(name, [f"{key}={c}"]), key) == c


def test_the_messages_existing_callers_match():
    with pytest.raises(WorkbenchError, match="unknown mode 'nudge'; mode must be one of add, abl"):
        make_config("steer", {"mode": "nudge"})
    with pytest.raises(WorkbenchError, match="params must be one of"):
        make_config("ga", ["params=embed"])
    with pytest.raises(WorkbenchError, match="retain_loss must be one of"):
        make_config("npo", ["retain_loss=l2"])


@pytest.mark.parametrize("name,overrides,match", [
    ("ga", {"steps": 0}, "steps must be >= 1, got 0"),
    ("ga", ["lr=0"], "lr must be > 0"),
    ("ga", {"steps": 2.5}, "steps must be int, got 2.5"),
    ("ga", {"steps": True}, "steps must be int"),
    ("ga", {"layers": (1, "a")}, r"layers must be tuple\[int, ...\] \| None"),
    ("npo", {"beta": -1.0}, "beta must be > 0"),
    ("prune", ["fraction=1.5"], r"fraction must be >= 0 and <= 1, got 1.5"),
    ("sae_clamp", {"max_retain_rate": 2}, "max_retain_rate must be >= 0 and <= 1"),
    ("ga", {"stop_forget_acc": "often"}, "cannot read 'often' as float"),
])
def test_types_and_bounds_are_checked(name, overrides, match):
    with pytest.raises(WorkbenchError, match=match):
        make_config(name, overrides)


def test_direct_construction_is_checked_too():
    from workbench.operators.steer import SteerConfig

    with pytest.raises(WorkbenchError, match="unknown gate 'oracle'"):
        SteerConfig(gate="oracle")
    with pytest.raises(WorkbenchError, match="unknown arch 'gated'; arch must be one of"):
        check_fields(SAETrainConfig(arch="gated"))


def test_overrides_are_read_by_type():
    cfg = make_config("ga", ["layers=1,2", "stop_forget_acc=none", "rows=none", "lr=1e-3",
                             "eval_every=0"])
    assert cfg.layers == (1, 2) and cfg.stop_forget_acc is None and cfg.rows == "none"
    assert cfg.lr == 1e-3 and cfg.eval_every == 0
    assert make_config("ga", {"layers": [0, 3]}).layers == (0, 3)  # JSON lists become tuples
    assert make_config("rmu", ["adaptive=yes"]).adaptive is True
    assert make_config("sae_clamp", ["sae=none", "features=3 5"]).features == (3, 5)
    assert parse_value("cosine", typing.Literal["constant", "cosine"], "k") == "cosine"
    assert parse_value("2", typing.Literal[1, 2] | None, "k") == 2
    with pytest.raises(WorkbenchError, match="cannot read 'maybe' as bool"):
        parse_value("maybe", bool, "k")


def test_option_needs_a_doc_and_subclasses_keep_it():
    with pytest.raises(TypeError, match="doc"):
        option(1, "")

    @dataclass(frozen=True)
    class Base:
        n: int = option(1, "how many", ge=1)

    @dataclass(frozen=True)
    class Child(Base):
        n: int = 5

    (spec,) = field_specs(Child)
    assert (spec.doc, spec.default, spec.bounds) == ("how many", 5, ((">=", 1),))
    with pytest.raises(WorkbenchError, match="n must be >= 1, got 0"):
        check_fields(Child(n=0))


runner = CliRunner()


def test_operators_command_shows_choices_and_docs():
    res = runner.invoke(app, ["operators", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    mode = next(f for f in rows["steer"]["fields"] if f["name"] == "mode")
    assert mode["choices"] == ["add", "ablate"] and mode["default"] == "add" and mode["doc"]
    assert ["beta", "float", 0.1] in rows["npo"]["config"]

    res = runner.invoke(app, ["operators", "steer"])
    assert res.exit_code == 0, res.output
    assert "mode: str = 'add'  (add | ablate)" in res.stdout
    assert "(none | keys | logreg | meandiff)" in res.stdout
    for spec in config_fields("steer"):
        assert spec.doc in res.stdout

    table = runner.invoke(app, ["operators"])
    assert table.exit_code == 0 and "removal-intended" in table.stdout
    assert "ablate" in table.stdout

    bad = runner.invoke(app, ["operators", "nope"])
    assert bad.exit_code == 2 and "unknown operator 'nope'" in bad.output
