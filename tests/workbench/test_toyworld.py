"""The toy world: deterministic facts, entity-level splits, a model that knows its facts, a retrain
oracle that does not know the forget facts, caching, CLI, and HF / TransformerLens parity."""

from __future__ import annotations

import json
import os

import torch

from workbench import toyworld as tw
from workbench.batching import encode
from workbench.behavior import greedy_continuations, is_match
from workbench.facts import SPLITS
from workbench.toyworld import ATTRIBUTES, WorldConfig, chance_rates, make_facts
from workbench.toyworld_train import TrainConfig, build_tokenizer


def test_world_is_deterministic():
    a, b = make_facts(WorldConfig(seed=0)), make_facts(WorldConfig(seed=0))
    assert [f.to_json() for f in a] == [f.to_json() for f in b]
    c = make_facts(WorldConfig(seed=1))
    assert [f.to_json() for f in a] != [f.to_json() for f in c]


def test_world_shape_and_splits_disjoint_by_person():
    cfg = WorldConfig()
    fs = make_facts(cfg)
    people = {s: {f.entity for f in fs.split(s)} for s in SPLITS}
    assert {s: len(p) for s, p in people.items()} == {
        "forget": cfg.n_forget, "retain": cfg.n_retain, "holdout": cfg.n_holdout,
        "unseen": cfg.n_unseen}
    assert sum(map(len, people.values())) >= 200
    for i, s in enumerate(SPLITS):
        for t in SPLITS[i + 1:]:
            assert not people[s] & people[t], (s, t)
    assert len(ATTRIBUTES) >= 4
    for f in fs:
        assert f.answer.startswith(" ") and f.entity in f.prompt
        assert len(f.paraphrases) >= 2 and all(f.entity in p for p in f.paraphrases)
        assert f.answer.strip() in ATTRIBUTES[f.relation][0]
    per_person = {}
    for f in fs:
        per_person.setdefault(f.entity, set()).add(f.relation)
    assert all(rels == set(ATTRIBUTES) for rels in per_person.values())


def test_tokenizer_encode_matches_joined_text():
    fs = make_facts()
    tok = build_tokenizer([t for f in fs for t in (f.prompt, *f.paraphrases, f.answer)])
    sample = list(fs)[:50]
    b = encode(tok, [f.prompt for f in sample], [f.answer for f in sample])
    for i, f in enumerate(sample):
        joined = tok(f.prompt + f.answer)["input_ids"]
        assert b.input_ids[i, : b.lengths[i]].tolist() == joined
        assert tok.unk_token_id not in joined
        assert is_match(tok.decode(joined[b.answer_start[i]:]), f.answer)


def test_original_knows_trained_facts(toyworld, toy_original, toy_facts):
    acc = toyworld.stats["accuracy"]["original"]
    for split in ("forget", "retain", "holdout"):
        assert acc[split]["accuracy"] >= 0.95, (split, acc[split])
    # the stats were measured with the same public function a user would call
    sample = toy_facts.forget.take(20)
    gens = greedy_continuations(toy_original, [f.prompt for f in sample], max_new_tokens=3)
    assert sum(is_match(g, f.answer) for g, f in zip(gens, sample, strict=True)) >= 19


def test_oracle_forgets_forget_set_only(toyworld):
    acc, chance = toyworld.stats["accuracy"], chance_rates()["mean"]
    assert acc["oracle"]["forget"]["accuracy"] <= chance + 0.12, acc["oracle"]["forget"]
    assert abs(acc["oracle"]["retain"]["accuracy"] - acc["original"]["retain"]["accuracy"]) <= 0.05
    assert acc["oracle"]["holdout"]["accuracy"] >= 0.9
    for model in ("original", "oracle"):
        assert acc[model]["unseen"]["accuracy"] <= chance + 0.12, (model, acc[model]["unseen"])


def test_cached_build_is_reused_without_training(toyworld, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached toy world was rebuilt")

    monkeypatch.setattr(tw, "_build", no_training)
    again = tw.build_toyworld(seed=toyworld.stats["seed"], progress=False)
    assert again.root == toyworld.root and again.stats == toyworld.stats


def test_saved_models_load_and_match_transformer_lens(toy_original, toy_facts):
    b = encode(toy_original.tokenizer, [f.prompt for f in toy_facts.take(8)])
    with torch.no_grad():
        hf = toy_original.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        tl = toy_original.hooked(b.input_ids, attention_mask=b.attention_mask)
    real = b.attention_mask.bool()
    assert (hf[real] - tl[real]).abs().max().item() < 1e-3
    assert toy_original.n_layers >= 4


def test_oracle_is_compatible_with_original(toy_original, toy_oracle):
    from workbench.models import check_compatible

    check_compatible(toy_original, toy_oracle)
    assert toy_original.name == "toyworld-original" and toy_oracle.name == "toyworld-oracle"
    assert toy_oracle.meta["toyworld"]["trained_on"] == ["retain", "holdout"]


def _tiny_config(seed: int = 0) -> WorldConfig:
    return WorldConfig(seed=seed, n_forget=3, n_retain=6, n_holdout=3, n_unseen=3,
                       train=TrainConfig(d_model=32, n_layers=2, n_heads=2, d_mlp=64, epochs=2))


def test_cli_build_writes_artefacts(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from apps.cli import app

    monkeypatch.setattr(tw, "WorldConfig", _tiny_config)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # train in-process: no worker start-up
    out = tmp_path / "world"
    res = CliRunner().invoke(app, ["toyworld", "build", "--out", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    for name in ("facts.jsonl", "world.json", "original/model.safetensors",
                 "oracle/model.safetensors", "original/tokenizer.json"):
        assert (out / name).exists(), name
    stats = json.loads((out / "world.json").read_text())
    assert stats["seed"] == 3 and set(stats["accuracy"]) == {"original", "oracle"}
    assert "oracle" in res.output and "forget" in res.output
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert not leftovers  # the temporary build directory was renamed into place


def test_training_is_deterministic_in_process_or_in_parallel(tmp_path):
    a = tw.build_toyworld(tmp_path / "a", config=_tiny_config(), progress=False, workers=1)
    b = tw.build_toyworld(tmp_path / "b", config=_tiny_config(), progress=False, workers=2)
    assert a.stats["accuracy"] == b.stats["accuracy"]
    for what in ("original", "oracle"):
        wa = (a.root / what / "model.safetensors").read_bytes()
        assert wa == (b.root / what / "model.safetensors").read_bytes(), what


def test_force_rebuilds_and_cache_reuses(tmp_path):
    a = tw.build_toyworld(tmp_path / "a", config=_tiny_config(), progress=False, workers=1)
    mtime = (a.root / "world.json").stat().st_mtime_ns
    tw.build_toyworld(tmp_path / "a", config=_tiny_config(), progress=False)
    assert (a.root / "world.json").stat().st_mtime_ns == mtime
    other = tw.build_toyworld(tmp_path / "a", config=_tiny_config(seed=1), progress=False,
                              workers=1)  # another config in the same place: rebuilt
    assert other.stats["seed"] == 1
    tw.build_toyworld(tmp_path / "a", config=_tiny_config(seed=1), progress=False, force=True,
                      workers=1)
    assert (a.root / "world.json").stat().st_mtime_ns != mtime


def test_parallel_workers_never_run_the_parents_main_script(tmp_path, monkeypatch):
    """Spawned workers re-run the parent's `__main__` script. Under Streamlit (or after a
    Streamlit AppTest in this process) that is a page that fails outside its server; the
    workers must start without it and the parent's `__main__` must come back."""
    import sys
    import types

    from workbench.toyworld_train import train_many

    page = tmp_path / "page.py"
    page.write_text("raise RuntimeError('a page script ran in a worker')\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", main)
    jobs = [{"a": 1}, {"b": 2}]
    assert train_many(jobs, workers=2, fn=dict) == jobs
    assert sys.modules["__main__"] is main
