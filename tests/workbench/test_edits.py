"""Edits: composition (sequential unlearning), save/load round trips, architecture checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from workbench.edits import Edit, load_edit_subject, register_intervention
from workbench.errors import IncompatibleSubjectsError, ModelLoadError, WorkbenchError
from workbench.models import load_subject
from workbench.operators import get_operator, make_config

FAST = {"steps": 3, "eval_every": 0, "batch_size": 8}


def run(name: str, subject, facts, seed: int = 0) -> Edit:
    return get_operator(name).apply(subject, facts.forget, facts.retain,
                                    make_config(name, dict(FAST), seed=seed))


@torch.no_grad()
def logits(subject, text: str = "Hello world") -> torch.Tensor:
    ids = subject.tokenizer(text, return_tensors="pt")["input_ids"].to(subject.device)
    return subject.model(input_ids=ids).logits


@register_intervention
class ScaleResidual:
    """A test intervention: scale one block's output (a real hook with a tensor saved to disk)."""

    type = "test_scale_residual"

    def __init__(self, layer: int, scale: torch.Tensor) -> None:
        self.layer, self.scale, self.name = layer, scale, f"scale{layer}"

    def attach(self, model):
        from workbench.models import decoder_layers

        def hook(_m, _inp, out):
            return (out[0] * self.scale,) + tuple(out[1:]) if isinstance(out, tuple) \
                else out * self.scale

        return [decoder_layers(model)[self.layer].register_forward_hook(hook)]

    def save(self, directory: Path) -> dict[str, Any]:
        save_file({"scale": self.scale}, str(directory / "scale.safetensors"))
        return {"type": self.type, "layer": self.layer}

    @classmethod
    def load(cls, directory: Path, spec: dict[str, Any]) -> ScaleResidual:
        return cls(spec["layer"], load_file(str(directory / "scale.safetensors"))["scale"])


def intervention_edit(subject) -> Edit:
    iv = ScaleResidual(0, torch.full((subject.d_model,), 0.5))
    edited = subject.with_interventions(iv)
    return Edit(operator="test_scale", family="suppression-intended", kind="intervention",
                config={"layer": 0}, seed=0, subject=edited,
                base=subject.meta.get("base", subject.source), chain=list(subject.meta.get("chain", [])))


def test_composition_records_the_chain_and_order_matters(toy_original, toy_facts):
    first = run("ga", toy_original, toy_facts)
    second = run("npo", first.subject, toy_facts)
    assert [c["operator"] for c in second.chain] == ["ga", "npo"]
    assert second.base == toy_original.source
    again = run("npo", second.subject, toy_facts)  # the same operator twice is two entries
    assert [c["operator"] for c in again.chain] == ["ga", "npo", "npo"]
    swapped = run("ga", run("npo", toy_original, toy_facts).subject, toy_facts)
    assert [c["operator"] for c in swapped.chain] == ["npo", "ga"]
    assert not torch.equal(logits(second.subject), logits(swapped.subject))
    assert "chain" not in toy_original.meta


def test_weight_edit_round_trip_gives_identical_logits(toy_original, toy_facts, tmp_path):
    edit = run("graddiff", toy_original, toy_facts)
    out = edit.save(tmp_path / "edit")
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    doc = json.loads((out / "edit.json").read_text())
    assert doc["operator"] == "graddiff" and doc["kind"] == "weights"
    assert doc["architecture"]["num_hidden_layers"] == toy_original.n_layers
    loaded = load_subject(str(out))
    assert torch.equal(logits(loaded), logits(edit.subject))
    assert not torch.equal(logits(loaded), logits(toy_original))
    # sequential unlearning continues from a saved edit and keeps the whole chain
    more = run("ga", loaded, toy_facts)
    assert [c["operator"] for c in more.chain] == ["graddiff", "ga"]
    assert more.base == toy_original.source


def test_intervention_edit_round_trip_and_mixed_chain(toy_original, toy_facts, tmp_path):
    iv_edit = intervention_edit(toy_original)
    out = iv_edit.save(tmp_path / "iv")
    assert not (out / "config.json").exists()  # only the spec + tensors, not the weights
    loaded = load_subject(str(out))
    assert torch.equal(logits(loaded), logits(iv_edit.subject))
    assert not torch.equal(logits(loaded), logits(toy_original))
    # a weight edit then an intervention: the weights must be saved too
    weights = run("ga", toy_original, toy_facts)
    mixed = intervention_edit(weights.subject)
    assert [c["operator"] for c in mixed.chain] == ["ga", "test_scale"]
    out2 = mixed.save(tmp_path / "mixed")
    assert (out2 / "model.safetensors").exists()
    assert torch.equal(logits(load_subject(str(out2))), logits(mixed.subject))


def test_loading_an_edit_onto_another_architecture_is_refused(toy_original, tiny, tmp_path):
    out = intervention_edit(toy_original).save(tmp_path / "iv")
    with pytest.raises(IncompatibleSubjectsError, match="another architecture"):
        load_edit_subject(out, onto=tiny)
    doc = json.loads((out / "edit.json").read_text())
    tiny.save(tmp_path / "other")
    doc["base"] = str(tmp_path / "other")  # the base checkpoint was swapped for another model
    (out / "edit.json").write_text(json.dumps(doc))
    with pytest.raises(IncompatibleSubjectsError, match="num_hidden_layers|hidden_size"):
        load_subject(str(out))


def test_weight_edit_cannot_be_attached_onto_another_subject(toy_original, toy_facts, tmp_path):
    out = run("ga", toy_original, toy_facts).save(tmp_path / "w")
    with pytest.raises(WorkbenchError, match="weight edit"):
        load_edit_subject(out, onto=toy_original)


def test_refuses_to_write_over_the_input_checkpoint(toy_original, toy_facts, tmp_path):
    edit = run("ga", toy_original, toy_facts)
    with pytest.raises(ModelLoadError, match="Refusing to overwrite"):
        edit.save(toy_original.source)
    saved = edit.save(tmp_path / "w")
    loaded = load_subject(str(saved))
    again = run("ga", loaded, toy_facts)
    with pytest.raises(ModelLoadError, match="Refusing to overwrite"):
        again.save(saved)
