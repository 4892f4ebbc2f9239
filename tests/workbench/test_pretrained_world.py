"""The real-model world: fictitious people's facts, the cheap fine-tuning recipe, and (slow) the
built world's targets against its retrain oracle."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from tests.conftest import make_tiny_subject
from workbench import pretrained_world as pw
from workbench.facts import SPLITS, builtin_facts
from workbench.pretrained_world_train import _UpperModel, finetune, null_spaces


def test_people_are_fictitious_deterministic_and_split_by_person():
    cfg = pw.PeopleConfig()
    a, b = pw.make_people_facts(cfg), pw.make_people_facts(cfg)
    assert [f.to_json() for f in a] == [f.to_json() for f in b]
    assert [f.to_json() for f in a] != [f.to_json() for f in pw.make_people_facts(
        pw.PeopleConfig(seed=1))]
    people = {s: {f.entity for f in a.split(s)} for s in SPLITS}
    assert {s: len(p) for s, p in people.items()} == {
        "forget": cfg.n_forget, "retain": cfg.n_retain, "holdout": cfg.n_holdout,
        "unseen": cfg.n_unseen}
    assert not any(people[s] & people[t] for s in SPLITS for t in SPLITS if s < t)
    names = set().union(*people.values())
    assert len({n.split()[0] for n in names}) == len(names)  # no shared given names
    real = {f.entity for f in builtin_facts()}
    assert not names & real
    assert len(pw.ATTRIBUTES) >= 4
    for f in a:
        assert f.entity in f.prompt and all(f.entity in p for p in f.paraphrases)
        assert len(f.paraphrases) + 1 > cfg.trained_phrasings  # some phrasings are held out


def test_values_are_balanced_so_a_constant_guess_scores_chance():
    fs = pw.make_people_facts()
    for split in SPLITS:
        for rel, (values, _) in pw.ATTRIBUTES.items():
            answers = Counter(f.answer for f in fs.split(split) if f.relation == rel)
            n = sum(answers.values())
            assert max(answers.values()) <= math.ceil(n / len(values)), (split, rel, answers)


def test_answers_are_single_tokens_and_names_split_like_names(bundled):
    tok = bundled.tokenizer
    for rel, (values, _) in pw.ATTRIBUTES.items():
        for v in values:
            assert len(tok(f" {v}", add_special_tokens=False)["input_ids"]) == 1, (rel, v)
    for f in pw.make_people_facts().forget:
        assert len(tok(f" {f.entity}", add_special_tokens=False)["input_ids"]) >= 3


def _pairs():
    fs = pw.make_people_facts(pw.PeopleConfig(n_forget=2, n_retain=2, n_holdout=1, n_unseen=1))
    return pw.training_pairs(fs.forget + fs.retain, 2)


def test_cached_prefix_reproduces_the_full_model(bundled):
    from workbench.batching import encode
    from workbench.models import decoder_layers

    sub = make_tiny_subject(bundled.tokenizer, n_layers=4)
    pairs = _pairs()
    batch = encode(sub.tokenizer, [p for p, _ in pairs], [a for _, a in pairs])
    layers = decoder_layers(sub.model)
    upper = _UpperModel(sub.model, layers, 2, batch)
    assert upper.cached and len(layers) == 2  # the frozen blocks were taken out ...
    idx = torch.arange(6)
    with torch.no_grad():
        got = upper._logits(idx, full=False)
    upper.restore()
    assert len(layers) == 4  # ... and put back
    with torch.no_grad():
        want = upper._logits(idx, full=True)
    assert torch.allclose(got, want, atol=1e-4)


def test_finetune_stays_in_the_null_space_of_ordinary_text(bundled):
    """Only the band's `down_proj` moves, by an update that leaves ordinary text's main
    directions alone, and the run is deterministic for a seed."""
    from workbench.corpus import stdlib_prose
    from workbench.models import decoder_layers

    cfg = pw.FineTuneConfig(first_block=0.25, last_block=0.75, epochs=2, lr=1e-2, target_loss=0.0)
    pairs = _pairs()
    texts = stdlib_prose(limit=32)
    runs = []
    for _ in range(2):
        sub = make_tiny_subject(bundled.tokenizer, n_layers=4)
        spaces = null_spaces(sub.model, sub.tokenizer, texts, cfg.blocks(4), energy=0.9)
        before = {k: v.clone() for k, v in sub.model.state_dict().items()}
        info = finetune(sub.model, sub.tokenizer, pairs, cfg, 0, spaces)
        after = sub.model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        runs.append((info, after))
        assert info["blocks"] == [1, 3] and info["cached_prefix"]
        assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2)}
        for i, basis in spaces.items():
            key = f"model.layers.{i}.mlp.down_proj.weight"
            delta = after[key] - before[key]
            kept = torch.eye(basis.shape[0]) - basis @ basis.T  # the directions left alone
            assert (delta @ kept).norm() <= 1e-3 * delta.norm()
            assert 0 < basis.shape[1] < basis.shape[0]
        assert len(decoder_layers(sub.model)) == 4
        assert all(p.requires_grad for p in sub.model.parameters())
    assert runs[0][0]["final_loss"] == runs[1][0]["final_loss"]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_build_world_rejects_a_missing_base(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.worlds import build_world

    with pytest.raises(WorkbenchError, match="--base"):
        build_world(str(tmp_path / "nope"), out=tmp_path / "w")


@pytest.mark.slow
def test_built_world_meets_its_targets(people_world):
    """Built from an empty cache in CI: the original knows its people (and phrasings it never
    saw), the oracle is at chance on the forget people only, general knowledge is kept."""
    s = people_world.stats
    acc, chance = s["accuracy"], s["chance"]["mean"]
    for split in ("forget", "retain", "holdout"):
        assert acc["original"][split]["accuracy"] >= 0.9, (split, acc["original"][split])
        assert acc["original"][split]["paraphrase_accuracy"] >= 0.9, (split, acc["original"][split])
    n = acc["oracle"]["forget"]["n"]
    # chance level: within two binomial standard errors of guessing
    assert acc["oracle"]["forget"]["accuracy"] <= chance + 2 * math.sqrt(chance * (1 - chance) / n)
    for split in ("retain", "holdout"):
        gap = acc["original"][split]["accuracy"] - acc["oracle"][split]["accuracy"]
        assert gap <= 0.05, (split, gap)
    for model in ("original", "oracle"):
        assert s["builtin_accuracy"][model] >= 0.9, s["builtin_accuracy"]
    assert s["build_seconds"] < 8 * 60 * 1.5  # the target is 8 minutes on 2 idle cores


def _tiny_base(bundled, tmp_path):
    sub = make_tiny_subject(bundled.tokenizer, n_layers=4)
    return str(sub.save(tmp_path / "tiny-base"))


def test_build_writes_the_world_layout_and_reuses_it(bundled, tmp_path, monkeypatch):
    """End to end on a tiny random base: the layout every command reads, the oracle trained
    without the forget people, caching by config hash, no leftovers."""
    from workbench.worlds import World, is_complete

    cfg = pw.PeopleConfig(base=_tiny_base(bundled, tmp_path), n_forget=2, n_retain=3,
                          n_holdout=2, n_unseen=2,
                          tune=pw.FineTuneConfig(epochs=1, null_space_texts=16))
    out = tmp_path / "world"
    world = pw.build_pretrained_world(out, cfg, progress=False, workers=1)
    assert isinstance(world, World) and is_complete(out, cfg.hash())
    s = world.stats
    assert s["kind"] == "pretrained" and s["n_people"]["forget"] == 2
    assert set(s["accuracy"]) == {"original", "oracle"}
    assert set(s["builtin_accuracy"]) == {"base", "original", "oracle"}
    assert s["trained_blocks"] == [1, 3] and s["null_space_dims"]
    assert world.facts().name == "people" and len(world.facts().forget) == 8
    assert world.oracle().meta["world"]["trained_on"] == ["retain", "holdout"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]

    def no_training(*args, **kwargs):
        raise AssertionError("a built world was rebuilt")

    monkeypatch.setattr(pw, "_build", no_training)
    assert pw.build_pretrained_world(out, cfg, progress=False).stats == s


def test_cli_world_build_takes_a_base(bundled, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from apps.cli import app

    base = _tiny_base(bundled, tmp_path)
    real = pw.PeopleConfig

    def tiny(base: str, seed: int = 0) -> pw.PeopleConfig:
        return real(base=base, seed=seed, n_forget=1, n_retain=2, n_holdout=1,
                               n_unseen=1, tune=pw.FineTuneConfig(epochs=1, null_space_texts=8))

    monkeypatch.setattr(pw, "PeopleConfig", tiny)
    monkeypatch.setattr("os.cpu_count", lambda: 1)  # train in-process: no worker start-up
    out = tmp_path / "w"
    res = CliRunner().invoke(app, ["world", "build", "--base", base, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "fine-tuned" in res.output and "built-in real facts" in res.output
    assert (out / "original" / "model.safetensors").exists()
    bad = CliRunner().invoke(app, ["world", "build", "--base", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "--base" in bad.output and "Traceback" not in bad.output
