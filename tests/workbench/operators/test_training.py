"""What keeps gradient edits local to the forgotten entities: entity-token masks, gradients that
enter the trained modules only at those tokens, and updates projected away from retain inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.batching import Batch, encode, last_true, span_mask
from workbench.errors import WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.operators.projection import input_projectors, projected_step
from workbench.operators.training import (
    FactTensors,
    answer_nll,
    default_layers,
    entity_positions,
    focus_updates,
    trainable_modules,
)


def test_span_mask_marks_the_entity_tokens_of_a_bpe_tokenizer(bundled):
    tok = bundled.tokenizer
    prompts = ["The capital of France is", "Leonardo da Vinci painted the", "No entity here"]
    b = encode(tok, prompts)
    m = span_mask(tok, prompts, ["France", "Leonardo da Vinci", "Paris"], b.input_ids.shape[1])
    words = [tok.decode(b.input_ids[i][m[i]]).strip() for i in range(3)]
    assert words == ["France", "Leonardo da Vinci", ""]
    last = last_true(m)
    assert tok.decode(b.input_ids[1, last[1]]).strip() == "Vinci"
    assert int(last[2]) == b.input_ids.shape[1] - 1  # no span: the last position


def test_entity_positions_auto_falls_back_when_a_fact_names_no_entity():
    named = FactSet((Fact("a", "Bob lives in", " Oslo", "forget", entity="Bob"),))
    bare = FactSet((Fact("b", "Bob lives in", " Oslo", "forget"),))
    assert entity_positions(named, "auto") and not entity_positions(bare, "auto")
    assert not entity_positions(named, "all")
    with pytest.raises(WorkbenchError, match="entity"):
        entity_positions(bare, "entity")
    with pytest.raises(WorkbenchError, match="positions"):
        entity_positions(named, "middle")


def test_default_layers_are_the_early_middle_blocks():
    assert default_layers(30) == (3, 4, 5, 6)
    assert default_layers(4) == (0, 1)
    assert default_layers(1) == (0,)


def _facts():
    people = ("Alice", "Bob", "Carol", "Dave")
    return FactSet(tuple(Fact(f"f{i}", f"{p} lives in the city of", " Paris", "forget", entity=p)
                         for i, p in enumerate(people)))


def test_gradients_enter_the_trained_modules_only_at_focus_positions(tiny):
    facts = _facts()
    ft = FactTensors.of(tiny, facts, "entity")
    b = ft.batch
    assert b.focus is not None
    assert [tiny.tokenizer.decode(b.input_ids[i][b.focus[i]]).strip() for i in range(4)] == \
        [f.entity for f in facts]
    mods = trainable_modules(tiny, "mlp", (0,))
    mlp = next(iter(mods.values()))
    tiny.model.requires_grad_(True)
    try:
        def grads(batch):
            tiny.model.zero_grad(set_to_none=True)
            with focus_updates(mods):
                answer_nll(tiny.model, batch).backward()
            return mlp.down_proj.weight.grad.clone()

        g_entity = grads(ft.batch)
        g_none = grads(dataclasses.replace(ft.batch, focus=torch.zeros_like(ft.batch.focus)))
        g_all = grads(FactTensors.of(tiny, facts, "all").batch)
    finally:
        tiny.model.requires_grad_(False)
    assert torch.count_nonzero(g_none) == 0  # no focus position: nothing reaches the MLP
    assert torch.count_nonzero(g_entity) > 0
    assert not torch.allclose(g_entity, g_all)


def test_projected_updates_leave_retain_inputs_nearly_unchanged():
    """After a projected step, the layer's output on the inputs that defined C moves far less
    than after the same unprojected step."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32, bias=False)
    common = torch.randn(8, 64)  # retain inputs span an 8-dim subspace
    x = torch.randn(200, 8) @ common

    class Wrap(torch.nn.Module):  # a "model" whose one layer sees the 200 retain inputs
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, input_ids=None, attention_mask=None):
            return self.layer(x.unsqueeze(0))

    wrap = Wrap()
    n = x.shape[0]
    retain = Batch(torch.zeros(1, n, dtype=torch.long), torch.ones(1, n, dtype=torch.long),
                   torch.tensor([n - 1]), torch.tensor([-1]), torch.zeros(1, n, dtype=torch.bool),
                   torch.tensor([n]))
    proj = input_projectors(wrap, {"layer": layer}, [retain], preserve=0.01)
    w0 = layer.weight.detach().clone()
    moved = {}
    for name, p in (("plain", {}), ("projected", proj)):
        layer.weight.data.copy_(w0)
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        opt.zero_grad()
        (-layer(torch.randn(16, 64)).pow(2).mean()).backward()  # an update from unrelated inputs
        projected_step(opt, p)
        moved[name] = float((x @ (layer.weight.detach() - w0).T).norm())
    assert moved["projected"] < 0.05 * moved["plain"]
    with pytest.raises(WorkbenchError, match="preserve"):
        input_projectors(wrap, {"layer": layer}, [retain], preserve=0.0)
