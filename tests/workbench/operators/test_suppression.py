"""Suppression-intended operators: rmu, prune, steer, prompt (mechanics on tiny models, forgetting
like the oracle on the toy world, steer on the bundled model)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_forgets_like_the_oracle, snapshot

from workbench.batching import encode
from workbench.behavior import accuracy_by_split, greedy_continuations
from workbench.errors import LayerError, WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.models import load_subject
from workbench.operators import get_operator, make_config
from workbench.operators.interventions import PromptPrefix, ResidualSteer

NAMES = ("rmu", "prune", "steer", "prompt")


def _facts(split: str, n: int, offset: int = 0) -> FactSet:
    people = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")
    cities = ("Paris", "Rome", "Oslo", "Lima", "Cairo")
    return FactSet(tuple(
        Fact(f"{split}{i}", f"{people[(i + offset) % 10]} lives in the city of",
             f" {cities[i % 5]}", split, paraphrases=(f"The home of {people[(i + offset) % 10]} is",),
             entity=people[(i + offset) % 10])
        for i in range(n)))


@pytest.fixture
def tiny_facts():
    return _facts("forget", 4), _facts("retain", 4, offset=5)


def _logits(subject, prompts):
    b = encode(subject.tokenizer, prompts, device=subject.device)
    with torch.no_grad():
        return subject.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b



# ----- mechanics on a tiny random model --------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_registered_as_suppression(name):
    op = get_operator(name)
    assert op.family == "suppression-intended"
    assert op.kind == ("weights" if name in ("rmu", "prune") else "intervention")


@pytest.mark.parametrize("name,overrides", [
    ("rmu", {"steps": 3, "layer": 1}), ("prune", {"fraction": 0.1}),
    ("steer", {"layers": (1,)}), ("prompt", {}),
])
def test_input_untouched_and_deterministic(tiny, tiny_facts, name, overrides):
    forget, retain = tiny_facts
    before = snapshot(tiny)
    op = get_operator(name)
    cfg = make_config(name, overrides, seed=3)
    e1, e2 = op.apply(tiny, forget, retain, cfg), op.apply(tiny, forget, retain, cfg)
    after = snapshot(tiny)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not tiny.interventions
    l1, _ = _logits(e1.subject, ["Alice lives in the city of"])
    l2, _ = _logits(e2.subject, ["Alice lives in the city of"])
    assert torch.equal(l1, l2)
    if op.kind == "weights":
        s1, s2 = e1.subject.model.state_dict(), e2.subject.model.state_dict()
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
        assert any(not torch.equal(s1[k], before[k]) for k in s1)
    l0, _ = _logits(tiny, ["Alice lives in the city of"])
    assert not torch.allclose(l0, l1)


@pytest.mark.parametrize("name", NAMES)
def test_empty_forget_set_is_an_error(tiny, tiny_facts, name):
    _, retain = tiny_facts
    with pytest.raises(WorkbenchError, match="forget"):
        get_operator(name).apply(tiny, FactSet((), "empty"), retain, make_config(name))


@pytest.mark.parametrize("name,overrides", [
    ("rmu", {"layer": 7}), ("rmu", {"layer": 1, "layers": (0, 5)}), ("prune", {"layers": (2,)}),
    ("steer", {"layers": (-1,)}), ("steer", {"layers": (0,), "gate_layer": 9}),
])
def test_layer_out_of_range(tiny, tiny_facts, name, overrides):
    forget, retain = tiny_facts
    with pytest.raises(LayerError):
        get_operator(name).apply(tiny, forget, retain, make_config(name, overrides))


@pytest.mark.parametrize("name,overrides", [
    ("steer", {"mode": "nudge"}), ("steer", {"gate": "oracle"}),
    ("steer", {"direction": "random"}), ("prune", {"score": "max"}),
    ("prompt", {"style": "poem"}),
])
def test_unknown_mode(tiny, tiny_facts, name, overrides):
    forget, retain = tiny_facts
    with pytest.raises(WorkbenchError, match="unknown"):
        get_operator(name).apply(tiny, forget, retain, make_config(name, overrides))


@pytest.mark.parametrize("name,overrides", [
    ("steer", {"layers": (0, 1), "mode": "add", "gate": "logreg"}),
    ("steer", {"layers": (0, 1), "mode": "add", "gate": "keys"}),
    ("steer", {"layers": (1,), "mode": "ablate", "gate": "none"}),
    ("prompt", {}),
])
def test_intervention_save_load_roundtrip(tiny, tiny_facts, tmp_path, name, overrides):
    forget, retain = tiny_facts
    base = tmp_path / "base"
    tiny.save(base)
    subject = load_subject(str(base), device="cpu")
    edit = get_operator(name).apply(subject, forget, retain, make_config(name, overrides))
    out = edit.save(tmp_path / "edit")
    assert not (out / "config.json").exists()  # only the intervention is stored
    loaded = load_subject(str(out), device="cpu")
    prompts = ["Alice lives in the city of", "Judy is", "The home of Bob is"]
    a, _ = _logits(edit.subject, prompts)
    b, _ = _logits(loaded, prompts)
    assert torch.equal(a, b)


def test_gated_steer_leaves_non_firing_inputs_unchanged(tiny):
    d = tiny.d_model
    w = torch.zeros(d)
    w[0] = 1.0
    iv = ResidualSteer((0, 1), torch.randn(2, d, generator=torch.Generator().manual_seed(0)),
                       torch.tensor([5.0, 5.0]), "add", gate_layer=0, gate_w=w, gate_b=0.0,
                       pad_token_id=tiny.tokenizer.pad_token_id)
    steered = tiny.with_interventions(iv)
    prompts = ["Alice lives in the city of", "Bob", "The home of Carol is a big house", "Dave"]
    base, b = _logits(tiny, prompts)
    out, _ = _logits(steered, prompts)
    # which inputs fire: the mean over real tokens of h[0] after block 0
    from workbench.capture import capture

    acts = capture(tiny, prompts, [0], position="all")
    h = acts.layer(0)[..., 0]
    real = torch.arange(h.shape[1])[None] < acts.lengths[:, None]
    fires = (h * real).sum(1) / real.sum(1) > 0
    assert fires.any() and (~fires).any()
    for i in range(len(prompts)):
        n = int(b.lengths[i])
        same = torch.equal(out[i, :n], base[i, :n])
        assert same == (not bool(fires[i]))
    # the gate of a prompt does not depend on how it was padded or batched
    alone = [_logits(steered, [p])[0][0, -1] for p in prompts]
    for i in range(len(prompts)):
        assert torch.allclose(alone[i], out[i, int(b.last[i])], atol=1e-5)


def test_key_gate_fires_on_forget_entities_only(tiny, tiny_facts):
    """gate=keys keys on the forget people's own tokens: a new phrasing about a forget person is
    steered, prompts about other people (retain or never seen) are left exactly unchanged."""
    forget, retain = tiny_facts  # forget: Alice..Dave; retain: Frank..Judy
    edit = get_operator("steer").apply(tiny, forget, retain,
                                       make_config("steer", {"layers": (1,), "gate": "keys"}))
    iv = edit.subject.interventions[0]
    assert iv.gate_keys is not None and iv.gate_w is None
    assert iv.gate_keys.shape == (len(forget) * 2, tiny.d_model)  # prompt + one paraphrase each
    prompts = ["Alice lives in the city of", "Where does Bob work? Bob", "Judy lives in the city of",
               "Heidi lives in the city of"]
    base, b = _logits(tiny, prompts)
    out, _ = _logits(edit.subject, prompts)
    same = [torch.equal(out[i, : int(b.lengths[i])], base[i, : int(b.lengths[i])])
            for i in range(len(prompts))]
    assert same == [False, False, True, True]


def test_key_gate_finds_entities_that_are_not_annotated(tiny, tiny_facts):
    forget, retain = tiny_facts
    bare = FactSet(tuple(Fact(f.id, f.prompt, f.answer, f.split, f.paraphrases) for f in forget))
    edit = get_operator("steer").apply(tiny, bare, retain, make_config("steer"))
    assert edit.subject.interventions  # the default gate (keys) worked without annotations
    # when no entity can be told apart (the same words in every prompt), it says so
    same = FactSet(tuple(Fact(f"s{i}", "It is", f.answer, f.split) for i, f in enumerate(forget)))
    with pytest.raises(WorkbenchError, match="entity"):
        get_operator("steer").apply(tiny, same, retain, make_config("steer", {"gate": "keys"}))
    # a linear gate does not need them
    get_operator("steer").apply(tiny, same, retain, make_config("steer", {"gate": "logreg"}))


def test_prompt_prefix_equals_running_on_prefix_plus_prompt(tiny, tiny_facts):
    forget, retain = tiny_facts
    edit = get_operator("prompt").apply(tiny, forget, retain, make_config("prompt"))
    iv = edit.subject.interventions[0]
    assert isinstance(iv, PromptPrefix) and "Alice" in iv.text
    prompts = ["Alice lives in the city of", "The home of Judy is", "Bob"]
    out, b = _logits(edit.subject, prompts)
    assert out.shape[1] == b.input_ids.shape[1]  # only the original positions come out
    for i, p in enumerate(prompts):
        ids = torch.tensor([iv.prefix_ids + encode(tiny.tokenizer, [p]).input_ids[0].tolist()])
        with torch.no_grad():
            ref = tiny.model(input_ids=ids).logits[0, -1]
        assert (out[i, int(b.last[i])] - ref).abs().max() < 1e-4
    # left-padded cached generation equals generating from the concatenated text
    gens = greedy_continuations(edit.subject, prompts, max_new_tokens=5)
    tok = tiny.tokenizer
    for p, g in zip(prompts, gens, strict=True):
        ids = torch.tensor([iv.prefix_ids + tok(p)["input_ids"]])
        ref = tiny.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=5, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
        assert g == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)


def test_rmu_adaptive_differs(tiny, tiny_facts):
    forget, retain = tiny_facts
    op = get_operator("rmu")
    a = op.apply(tiny, forget, retain, make_config("rmu", {"steps": 3, "layer": 1}))
    b = op.apply(tiny, forget, retain, make_config("rmu", {"steps": 3, "layer": 1,
                                                           "adaptive": True}))
    sa, sb = a.subject.model.state_dict(), b.subject.model.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    # only the MLPs of layers 0 and 1 changed (the tiny model's embedding is tied: no rows)
    base = tiny.model.state_dict()
    changed = {k for k in sa if not torch.equal(sa[k], base[k])}
    assert changed and all(".mlp." in k and k.split(".")[2] in ("0", "1") for k in changed)


def test_rmu_lr_schedule():
    from workbench.operators.rmu import lr_factor

    assert [lr_factor("constant", 10)(s) for s in (0, 5, 10)] == [1.0, 1.0, 1.0]
    cos = [lr_factor("cosine", 10)(s) for s in range(11)]
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(cos, cos[1:]))
    with pytest.raises(WorkbenchError, match="lr_schedule"):
        lr_factor("linear", 10)


def test_prune_zeroes_down_proj_columns(tiny, tiny_facts):
    forget, retain = tiny_facts
    edit = get_operator("prune").apply(tiny, forget, retain,
                                       make_config("prune", {"fraction": 0.25, "layers": (1,)}))
    w = edit.subject.model.model.layers[1].mlp.down_proj.weight
    zero_cols = (w == 0).all(0)
    assert int(zero_cols.sum()) == round(0.25 * w.shape[1])
    w0 = edit.subject.model.model.layers[0].mlp.down_proj.weight
    assert torch.equal(w0, tiny.model.model.layers[0].mlp.down_proj.weight)


# ----- toy world: forget like the oracle; bundled model: steer (seconds) -----------------------

@pytest.mark.parametrize("name", ("rmu", "prune", "steer"))
def test_forgets_like_the_oracle_on_toy_world(toyworld, toy_original, toy_facts, name):
    before = accuracy_by_split(toy_original, toy_facts)
    edit = get_operator(name).apply(toy_original, toy_facts.forget, toy_facts.retain,
                                    make_config(name))
    assert_forgets_like_the_oracle(toyworld, before, accuracy_by_split(edit.subject, toy_facts))


def test_prompt_refuses_a_prefix_longer_than_the_toy_context(toy_original, toy_facts):
    """Naming 30 people takes more positions than the toy model has: a clear error, not a
    silently truncated prefix."""
    with pytest.raises(WorkbenchError, match="positions"):
        get_operator("prompt").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                     make_config("prompt"))


def test_rmu_positions_auto_follow_the_recall_site(toy_original, toy_facts):
    """`auto` misdirects the name and the answer positions where patching the last token after
    the update layer swaps answers more often than patching the name, else the name only (which
    wins depends on the world: the rule must hold on every seed)."""
    from workbench.operators.rmu import rmu_edit

    _, stats = rmu_edit(toy_original, toy_facts.forget, toy_facts.retain,
                        make_config("rmu", {"steps": 2}), progress=False)
    assert stats["layer"] == 1  # a quarter of the depth
    last, entity = stats["swap_rate_last"], stats["swap_rate_entity"]
    assert 0 <= last <= 1 and 0 <= entity <= 1
    assert stats["positions"] == ("entity+answer" if last > entity else "entity"), stats
    _, fixed = rmu_edit(toy_original, toy_facts.forget, toy_facts.retain,
                        make_config("rmu", {"steps": 2, "positions": "entity"}), progress=False)
    assert fixed["positions"] == "entity" and "swap_rate_last" not in fixed


def test_steer_on_the_bundled_model_forgets_and_keeps_holdout(bundled):
    """Steering SmolLM2 away from its built-in forget facts (no training: seconds) silences most
    of them and keeps most holdout answers."""
    from workbench.facts import builtin_facts

    facts = builtin_facts("smollm2")
    before = accuracy_by_split(bundled, facts)
    edit = get_operator("steer").apply(bundled, facts.forget, facts.retain, make_config("steer"))
    after = accuracy_by_split(edit.subject, facts)
    assert after["forget"]["accuracy"] <= before["forget"]["accuracy"] - 0.5, (before, after)
    assert after["holdout"]["accuracy"] >= 0.8 * before["holdout"]["accuracy"], (before, after)
