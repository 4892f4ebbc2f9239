"""The registry type, its users (operators, intervention kinds, probes, architectures, figures),
entry-point plug-ins, and saved edits re-loading every core intervention kind."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from workbench.errors import ModelLoadError, WorkbenchError
from workbench.registry import Registry, RegistryError, UnknownNameError

ROOT = Path(__file__).resolve().parents[2]


# ----- the registry type ------------------------------------------------------------------------

def test_register_get_and_order():
    reg: Registry[int] = Registry("thing")
    reg.register("b_two", 2)

    @reg.register("a_one")
    def one() -> int:
        return 1

    assert reg["b_two"] == 2 and reg.get("a_one") is one
    assert list(reg) == ["b_two", "a_one"] == reg.names()  # registration order, not sorted
    assert "a_one" in reg and "zzz" not in reg and len(reg) == 2
    assert reg.get("zzz", None) is None
    assert dict(reg.items()) == {"b_two": 2, "a_one": one}


def test_duplicate_name_is_loud_same_object_is_not():
    reg: Registry[object] = Registry("thing")
    obj = object()
    reg.register("x", obj)
    reg.register("x", obj)  # the same object again (e.g. two distributions declaring one plug-in)
    with pytest.raises(RegistryError, match="'x' registered twice.*known: \\['x'\\]"):
        reg.register("x", object())


def test_unknown_name_lists_the_known_ones():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'gamma'; known: \['alpha', 'beta'\]"):
        reg["gamma"]
    with pytest.raises(WorkbenchError):  # a WorkbenchError: the CLI prints it without a traceback
        reg.get("gamma")


@pytest.mark.parametrize("bad", ["Alpha", "kebab-case", "1st", "_x", "x_", "a__b", "", "a b"])
def test_names_must_be_snake_case(bad):
    with pytest.raises(RegistryError, match="snake_case"):
        Registry("thing").register(bad, 1)


def test_name_of_must_match():
    class Op:
        name = "real_name"

    reg: Registry[type] = Registry("operator", name_of=lambda c: c.name)
    with pytest.raises(RegistryError, match="calls itself 'real_name'"):
        reg.register("other_name", Op)


# ----- entry-point plug-ins ---------------------------------------------------------------------

def _fake_entry_points(monkeypatch, eps: list[importlib.metadata.EntryPoint]) -> list[str]:
    """Make `importlib.metadata.entry_points(group=...)` return `eps`; returns the log of calls."""
    calls: list[str] = []

    def fake(group: str | None = None, **_kw):
        calls.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return calls


def _ep(name: str, value: str, group: str = "workbench.test") -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=group)


def test_plugins_load_lazily_by_name_and_all_on_listing(monkeypatch):
    import collections

    calls = _fake_entry_points(monkeypatch, [_ep("ordered", "collections:OrderedDict"),
                                             _ep("counter", "collections:Counter"),
                                             _ep("other_group", "json:dumps", "workbench.else")])
    reg: Registry[type] = Registry("thing", group="workbench.test")
    reg.register("core", dict)
    assert calls == []  # nothing is read before a lookup needs it
    assert reg["core"] is dict and calls == []
    assert reg["counter"] is collections.Counter
    assert "ordered" not in reg._items  # a lookup by name loads that plug-in only
    assert reg.names() == ["core", "counter", "ordered"]
    with pytest.raises(UnknownNameError, match=r"known: \['core', 'counter', 'ordered'\]"):
        reg["dumps"]


def test_a_plugin_clashing_with_a_core_name_is_loud(monkeypatch):
    _fake_entry_points(monkeypatch, [_ep("core", "collections:OrderedDict")])
    reg: Registry[type] = Registry("thing", group="workbench.test")
    reg.register("core", dict)
    with pytest.raises(RegistryError, match="'core' registered twice"):
        reg.names()


def test_a_broken_plugin_names_itself(monkeypatch):
    _fake_entry_points(monkeypatch, [_ep("broken", "workbench_no_such_module:thing")])
    reg: Registry[type] = Registry("thing", group="workbench.test")
    with pytest.raises(RegistryError, match="plug-in 'broken'.*failed to load"):
        reg["broken"]


def _declared() -> dict[str, dict[str, str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]


def test_declared_entry_points_resolve_to_what_they_name():
    declared = _declared()
    assert declared["workbench.operators"]["sae_clamp"] == "saes.clamp:SAEClampOperator"
    op = _ep("sae_clamp", declared["workbench.operators"]["sae_clamp"]).load()
    kind = _ep("sae_clamp", declared["workbench.interventions"]["sae_clamp"]).load()
    assert op.name == "sae_clamp" and kind.type == "sae_clamp"


def test_sae_clamp_registers_through_its_entry_point(monkeypatch):
    declared = _declared()
    _fake_entry_points(monkeypatch, [_ep(n, v, g) for g, d in declared.items()
                                     for n, v in d.items()])
    ops = Registry("operator", group="workbench.operators", name_of=lambda c: c.name)
    kinds = Registry("intervention kind", group="workbench.interventions",
                     name_of=lambda c: c.type)
    assert ops["sae_clamp"].__name__ == "SAEClampOperator"
    assert kinds.names() == ["sae_clamp"]


def test_core_does_not_import_saes():
    """Loading the core operators must not pull in the plug-in (checked in a fresh interpreter)."""
    code = ("import sys, workbench.operators, workbench.edits as e; e.intervention_kinds(); "
            "import workbench.operators.base as b; b.get_operator('ga'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'saes'))")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ----- the registries in use ------------------------------------------------------------------

def test_operator_registry_keeps_its_public_names():
    from workbench.operators import OPERATORS, get_operator, register_operator
    from workbench.operators.base import Operator

    assert {"ga", "npo", "steer", "prompt"} <= set(OPERATORS)
    with pytest.raises(WorkbenchError, match="unknown operator 'nope'; known: \\["):
        get_operator("nope")

    class Clash(Operator):
        name = "ga"

    with pytest.raises(RegistryError, match="operator 'ga' registered twice"):
        register_operator(Clash)


def test_probe_registry_is_explicit_and_complete():
    from probes import PROBES, available, get_probe
    from probes.base import Probe

    assert available() == ["behavior_pressure", "logit_lens", "linear_probes", "clusters",
                           "signal", "activation_patching", "attribution_patching",
                           "parameter_restoration", "relearning", "quantization",
                           "directional_ablation", "in_context_recovery", "membership"]
    for name in available():
        assert isinstance(PROBES[name], Probe) and PROBES[name].name == name
    with pytest.raises(UnknownNameError, match="unknown analysis module 'nope'; known: \\["):
        get_probe("nope")


def test_every_probe_has_a_figure():
    from apps.figures import FIGURES
    from probes import available

    assert set(available()) <= set(FIGURES)


def test_architecture_layouts(tiny):
    from workbench.architectures import ARCHITECTURES, layout_of
    from workbench.errors import ModelLoadError
    from workbench.models import decoder_layers, final_norm

    assert list(ARCHITECTURES)[:1] == ["llama"]
    assert layout_of(tiny.model)[0] == "llama"
    assert decoder_layers(tiny.model) is tiny.model.model.layers
    assert final_norm(tiny.model) is tiny.model.model.norm
    with pytest.raises(ModelLoadError, match="none of the known architectures \\['llama'"):
        decoder_layers(torch.nn.Linear(2, 2))


# ----- saved edits re-load every core intervention kind ----------------------------------------

PROMPT = "The capital of France is"


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@torch.no_grad()
def _last_logits(subject) -> torch.Tensor:
    ids = subject.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    return subject.model(input_ids=ids).logits[0, -1]


@pytest.fixture
def saved_core_edits(tiny, tmp_path):
    """One saved edit per core intervention kind over a saved tiny base, with its logits."""
    from workbench.controls import OutputSuppressor
    from workbench.edits import Edit
    from workbench.models import load_subject, save_checkpoint
    from workbench.operators.interventions import PromptPrefix, ResidualSteer

    base = load_subject(str(save_checkpoint(tiny.model, tiny.tokenizer, tmp_path / "base")),
                        device="cpu")
    ids = tiny.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    top = int(_last_logits(base).argmax())
    g = torch.Generator().manual_seed(0)
    ivs = {"steer": ResidualSteer((0,), torch.randn(1, base.d_model, generator=g),
                                  torch.tensor([4.0])),
           "prompt_prefix": PromptPrefix(ids[:2], "The capital"),
           "output_suppressor": OutputSuppressor(triggers=[ids[:1]], token_ids=[top])}
    out = {}
    for kind, iv in ivs.items():
        edited = base.with_interventions(iv)
        Edit(operator="test", family="suppression-intended", kind="intervention", config={},
             seed=0, subject=edited, base=str(tmp_path / "base")).save(tmp_path / kind)
        out[kind] = (tmp_path / kind, _last_logits(edited))
        assert not torch.allclose(out[kind][1], _last_logits(base))  # the hook does something
    return out


_RELOAD = """
import json, sys
import torch
from workbench.models import load_subject
before = sorted(m for m in ("workbench.controls", "workbench.operators") if m in sys.modules)
rows = {}
for d in sys.argv[2:]:
    s = load_subject(d, device="cpu")
    ids = s.tokenizer(sys.argv[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = s.model(input_ids=ids).logits[0, -1]
    rows[d] = {"types": [iv.type for iv in s.interventions], "logits": logits.tolist()}
print(json.dumps({"before": before, "rows": rows}))
"""


def test_saved_edits_reload_every_core_kind_in_a_fresh_interpreter(saved_core_edits):
    dirs = [str(d) for d, _ in saved_core_edits.values()]
    out = subprocess.run([sys.executable, "-c", _RELOAD, PROMPT, *dirs], env=_env(), cwd=ROOT,
                         text=True, capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["before"] == []  # the loader, not its caller, imports the kinds' modules
    for kind, (d, logits) in saved_core_edits.items():
        row = doc["rows"][str(d)]
        assert row["types"] == [kind]
        assert torch.allclose(torch.tensor(row["logits"]), logits, atol=1e-4)


def test_kebab_case_kinds_of_old_edits_still_load(saved_core_edits):
    from workbench.models import load_subject

    d, logits = saved_core_edits["output_suppressor"]
    doc = json.loads((d / "edit.json").read_text())
    doc["interventions"][0]["type"] = "output-suppressor"  # as saved before snake_case names
    (d / "edit.json").write_text(json.dumps(doc))
    again = load_subject(str(d), device="cpu")
    assert [iv.type for iv in again.interventions] == ["output_suppressor"]
    assert torch.allclose(_last_logits(again), logits, atol=1e-5)


def test_unknown_kind_in_a_saved_edit_names_the_known(saved_core_edits):
    from workbench.models import load_subject

    d, _ = saved_core_edits["steer"]
    doc = json.loads((d / "edit.json").read_text())
    doc["interventions"][0]["type"] = "no_such_kind"
    (d / "edit.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="unknown intervention kind 'no_such_kind' in .*; "
                                             "known: \\[.*'output_suppressor'"):
        load_subject(str(d), device="cpu")


def test_plugin_kinds_come_from_the_declared_entry_points(tmp_path):
    """With the pyproject's entry points installed (here: a stand-in dist-info on the path), a
    fresh interpreter finds the plug-in operator and intervention kind without importing saes."""
    dist = tmp_path / "eps" / "workbench_registry_test-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: workbench-registry-test\n"
                                   "Version: 0.0\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in eps.items()) + "\n"
        for group, eps in _declared().items()))
    code = ("from workbench.operators import get_operator; "
            "from workbench.edits import intervention_kinds; "
            "print(type(get_operator('sae_clamp')).__name__, "
            "intervention_kinds()['sae_clamp'].__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "eps"), cwd=ROOT,
                         text=True, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SAEClampOperator", "SAEClamp"]
