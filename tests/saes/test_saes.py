"""Sparse autoencoders: training, saving/loading (disk and hub cache), forget features,
the `sae_clamp` operator and the feature views."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from saes.features import FeatureStat, rank_features
from saes.load import LoadedSAE, check_fits, load_pretrained_sae, load_sae, resolve_sae
from saes.train import SAETrainConfig, TrainedSAE, save_sae, train_sae
from workbench.corpus import fact_texts, read_corpus, split_held_out, stdlib_prose
from workbench.errors import WorkbenchError
from workbench.facts import Fact, FactSet

TEXTS = [
    "The cat sat on the mat and looked at the garden.",
    "A river runs through the old town in the spring.",
    "Numbers like seven and twelve appear in the list.",
    "She plays the violin every evening after dinner.",
    "The capital of France is Paris, a city of lights.",
    "Bright stars shine over the quiet desert at night.",
    "He works as a baker and bakes bread every morning.",
    "The museum opens at nine and closes at five.",
] * 6
SMALL = SAETrainConfig(layer=1, width=96, k=6, tokens=2000, epochs=40, batch_size=64,
                       eval_texts=8)


def _facts() -> FactSet:
    rows = []
    people = [("Zorvath Quell", "forget"), ("Mirela Dunst", "forget"),
              ("Tobias Renk", "retain"), ("Helga Pfarr", "retain"), ("Ivo Brandt", "holdout")]
    for i, (name, split) in enumerate(people):
        rows.append(Fact(id=f"f{i}", prompt=f"{name} lives in the city of", answer=" Oslo",
                         split=split, paraphrases=(f"The home town of {name} is",)))
    return FactSet(tuple(rows), "mini")


@pytest.fixture(scope="module")
def tiny_sae(bundled) -> tuple:
    from tests.conftest import make_tiny_subject

    subject = make_tiny_subject(bundled.tokenizer)
    return subject, train_sae(subject, TEXTS, SMALL, progress=False)


def _loaded(trained: TrainedSAE) -> LoadedSAE:
    return LoadedSAE(trained.sae, trained.hook, "memory", trained.meta())


# ----- corpus ------------------------------------------------------------------------------

def test_stdlib_prose_is_english_and_deterministic():
    everything = stdlib_prose()
    assert len(everything) > 1000 and sum(map(len, everything)) > 200_000
    a = stdlib_prose(limit=200)
    assert a == everything[:200]
    assert all(">>>" not in t and t[0].isupper() and "  " not in t for t in a)


def test_corpus_helpers(tmp_path):
    assert fact_texts(_facts())[0] == "Zorvath Quell lives in the city of Oslo"
    f = tmp_path / "c.txt"
    f.write_text("one text\n\nanother text\n")
    assert read_corpus(f) == ["one text", "another text"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(WorkbenchError, match="no text"):
        read_corpus(tmp_path / "empty.txt")
    train, held = split_held_out([str(i) for i in range(1000)], max_eval=10)
    assert len(held) == 10 and set(train).isdisjoint(held)


# ----- training ----------------------------------------------------------------------------

def test_train_tiny_topk(tiny_sae):
    _, trained = tiny_sae
    m = trained.metrics
    assert trained.hook == "blocks.1.hook_resid_post"
    assert trained.sae.cfg.d_sae == 96 and trained.sae.cfg.d_in == 64
    assert m.mean_l0 == pytest.approx(6, abs=0.01)  # TopK fires exactly k features
    assert 0.0 < m.explained_variance <= 1.0
    assert 0.0 <= m.dead_fraction < 1.0
    assert m.eval_tokens > 20 and m.ce_spliced != m.ce_clean  # the splice really ran
    assert trained.sae.cfg.metadata.hook_name == trained.hook


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_train_other_architectures(bundled, arch):
    from tests.conftest import make_tiny_subject

    subject = make_tiny_subject(bundled.tokenizer)
    cfg = SAETrainConfig(layer=0, arch=arch, width=64, tokens=600, epochs=2, batch_size=128,
                         eval_texts=8)
    trained = train_sae(subject, TEXTS, cfg, progress=False)
    assert trained.sae.cfg.architecture() == arch
    assert trained.metrics.mean_l0 > 0 and trained.metrics.eval_tokens > 0


def test_pack_joins_texts_into_contexts_only_when_asked(tiny, monkeypatch):
    import saes.train as st

    seen: list[list[str]] = []
    real = st.collect_activations
    monkeypatch.setattr(st, "collect_activations",
                        lambda subject, texts, *a, **k: seen.append(list(texts))
                        or real(subject, texts, *a, **k))
    cfg = SAETrainConfig(layer=0, width=32, k=4, tokens=300, epochs=1, batch_size=64,
                         eval_texts=8)
    train_sae(tiny, TEXTS, cfg, progress=False)
    train_sae(tiny, TEXTS, SAETrainConfig(**{**cfg.__dict__, "pack": False}), progress=False)
    packed, single = seen
    assert single == split_held_out(TEXTS, max_eval=8)[0]  # each text its own context
    assert len(packed) < len(single) and " ".join(packed) == " ".join(single)


def test_bad_train_config(tiny):
    for bad in (SAETrainConfig(arch="gated"), SAETrainConfig(layer=9),
                SAETrainConfig(point="hook_z"), SAETrainConfig(k=0)):
        with pytest.raises(WorkbenchError):
            train_sae(tiny, TEXTS, bad, progress=False)


# ----- save / load -------------------------------------------------------------------------

def test_save_load_round_trip(tiny_sae, tmp_path):
    from sae_lens import SAE

    _, trained = tiny_sae
    out = save_sae(trained, tmp_path / "sae")
    meta = json.loads((out / "workbench_sae.json").read_text())
    assert meta["hook_name"] == trained.hook and meta["layer"] == 1
    assert meta["metrics"]["mean_l0"] == trained.metrics.mean_l0
    raw = SAE.load_from_disk(out)  # SAELens' own loader opens it
    loaded = load_sae(out)
    assert loaded.hook == trained.hook
    x = torch.randn(20, 64)
    with torch.no_grad():
        ref = trained.sae.encode(x)  # the training class; the saved one is the inference class
        assert torch.allclose(raw.encode(x), ref, atol=1e-5)
        assert torch.equal(loaded.sae.encode(x), raw.encode(x))
        assert torch.equal(load_sae(out).sae.encode(x), raw.encode(x))


def test_loading_errors(tiny_sae, bundled, tmp_path):
    from tests.conftest import make_tiny_subject

    subject, trained = tiny_sae
    out = save_sae(trained, tmp_path / "sae")
    loaded = load_sae(out)
    check_fits(loaded, subject)
    narrow = make_tiny_subject(bundled.tokenizer, d_model=32)
    with pytest.raises(WorkbenchError, match="d_in=64"):
        check_fits(loaded, narrow)
    shallow = make_tiny_subject(bundled.tokenizer, n_layers=1)
    with pytest.raises(WorkbenchError, match="layer 1 out of range"):
        check_fits(loaded, shallow)
    with pytest.raises(WorkbenchError, match="not 'blocks.0.hook_resid_post'"):
        load_sae(out, hook="blocks.0.hook_resid_post")
    with pytest.raises(WorkbenchError, match="no cfg.json"):
        load_sae(tmp_path)
    with pytest.raises(WorkbenchError, match="unsupported hook point"):
        check_fits(LoadedSAE(loaded.sae, "blocks.1.hook_z", "x"), subject)


def _fill_hub_cache(cache: Path, repo_id: str, folder: str, sae_dir: Path) -> None:
    """Lay files out as huggingface_hub's cache does: refs/main -> snapshots/<commit>/..."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit / folder
    snap.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(sae_dir / name, snap / name)


def test_pretrained_from_offline_hub_cache(tiny_sae, tmp_path, monkeypatch):
    """`SAE.from_pretrained` for a plain repo id and for a registered SAELens release name."""
    import huggingface_hub.constants as hub

    _, trained = tiny_sae
    sae_dir = save_sae(trained, tmp_path / "sae")
    cache = tmp_path / "hub"
    _fill_hub_cache(cache, "someone/tiny-saes", "layer1", sae_dir)
    # a registered release: SAELens maps it to jbloom/GPT2-Small-SAEs-Reformatted/<folder>
    _fill_hub_cache(cache, "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre",
                    sae_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    x = torch.randn(10, 64)
    with torch.no_grad():
        ref = trained.sae.encode(x)
        by_repo = resolve_sae("release:someone/tiny-saes:layer1", device="cpu")
        assert by_repo.hook == trained.hook
        assert torch.allclose(by_repo.sae.encode(x), ref, atol=1e-5)
        by_release = load_pretrained_sae("gpt2-small-res-jb", "blocks.0.hook_resid_pre",
                                         device="cpu")
        assert torch.equal(by_release.sae.encode(x), by_repo.sae.encode(x))
    with pytest.raises(WorkbenchError, match="hub cache"):
        load_pretrained_sae("someone/tiny-saes", "missing-folder", device="cpu")
    with pytest.raises(WorkbenchError, match="release"):
        resolve_sae("release:only-one-part")


# ----- forget features ---------------------------------------------------------------------

def test_rank_features_recovers_planted_features():
    gen = torch.Generator().manual_seed(0)
    forget = torch.rand(400, 10, generator=gen) * (torch.rand(400, 10, generator=gen) < 0.05)
    retain = torch.rand(600, 10, generator=gen) * (torch.rand(600, 10, generator=gen) < 0.05)
    forget[:, [3, 7, 9]] = 0.0
    retain[:, [3, 7, 9]] = 0.0
    forget[:200, 3] = 2.0  # fires on half the forget tokens, never on retain: best
    forget[:100, 7] = 1.0  # a quarter of forget tokens, weaker: second
    forget[:40, 9] = 1.0  # a tenth of forget tokens, and on 0.5% of retain ones: third
    retain[:3, 9] = 1.0
    forget[:, 5] = 3.0  # fires everywhere on forget but also on retain: excluded
    retain[:, 5] = 3.0
    forget[:150, 1] = 5.0  # strong on forget, but also on 5% of retain: excluded by the rate
    retain[:, 1] = 0.0
    retain[:30, 1] = 5.0
    stats = rank_features(forget, retain, top=5, max_retain_rate=0.01)
    # every other feature fires at random on ~5% of retain tokens, so only 3, 7, 9 survive
    assert [s.feature for s in stats] == [3, 7, 9]
    assert stats[0] == FeatureStat(3, 0.5, 0.0, 2.0, 0.0, 1.0)
    assert stats[2].retain_rate == 0.005 and stats[2].score == pytest.approx(0.1 - 0.005)
    with pytest.raises(WorkbenchError):
        rank_features(forget, retain[:, :5])


# ----- clamping ----------------------------------------------------------------------------

def _pick_feature(subject, loaded, fire_on: str, silent_on: str) -> int:
    """A feature active somewhere after position 0 on `fire_on` and nowhere on `silent_on`."""
    from saes.views import text_latents

    tl = text_latents(subject, loaded, [fire_on, silent_on])
    on = tl.latents[0][1:].amax(0)
    off = tl.latents[1].amax(0)
    candidates = torch.nonzero((on > 0) & (off <= 0)).squeeze(-1)
    assert len(candidates) > 0, "the tiny SAE should have a feature that separates the texts"
    return int(candidates[torch.argmax(on[candidates])])


def _logits(subject, text: str) -> torch.Tensor:
    from workbench.batching import encode

    b = encode(subject.tokenizer, [text], device=subject.device)
    with torch.no_grad():
        return subject.model(input_ids=b.input_ids).logits[0]


def test_clamp_changes_forget_inputs_and_leaves_others_exact(tiny_sae):
    from saes.clamp import SAEClamp

    subject, trained = tiny_sae
    loaded = _loaded(trained)
    hit, miss = TEXTS[0], TEXTS[4]
    f = _pick_feature(subject, loaded, hit, miss)
    edited = subject.with_interventions(SAEClamp(loaded, (f,), multiplier=20.0))
    assert (_logits(edited, hit) - _logits(subject, hit)).abs().max() > 1e-2
    assert torch.allclose(_logits(edited, miss), _logits(subject, miss), atol=1e-4)
    # restricted to a position where the feature is silent, nothing changes either
    far = SAEClamp(loaded, (f,), positions=(200,))
    assert torch.allclose(_logits(subject.with_interventions(far), hit), _logits(subject, hit),
                          atol=1e-4)
    # fixed clamp value, and the original subject is untouched by all of this
    fixed = subject.with_interventions(SAEClamp(loaded, (f,), clamp_value=-5.0))
    assert (_logits(fixed, hit) - _logits(subject, hit)).abs().max() > 1e-3
    with pytest.raises(WorkbenchError, match="out of range"):
        SAEClamp(loaded, (10_000,))


def test_clamp_edit_formula_matches_sae_decode(tiny_sae):
    """edit(h) == h + decode(edited latents) - decode(latents), computed the long way."""
    from saes.clamp import SAEClamp

    _, trained = tiny_sae
    loaded = _loaded(trained)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(2, 5, 64, generator=gen) * 3
    pos = torch.arange(5).expand(2, 5)
    with torch.no_grad():
        z = trained.sae.encode(h)
        feats = tuple(torch.nonzero(z[:, 1:].amax((0, 1)) > 0).squeeze(-1)[:3].tolist())
        iv = SAEClamp(loaded, feats, multiplier=4.0)
        z2 = z.clone()
        idx = list(feats)
        z2[:, 1:, idx] = torch.where(z[:, 1:, idx] > 0, -4.0 * z[:, 1:, idx], z[:, 1:, idx])
        want = h + trained.sae.decode(z2) - trained.sae.decode(z)
        assert torch.allclose(iv.edit(h, pos), want, atol=1e-5)
        assert torch.equal(iv.edit(h, pos)[:, 0], h[:, 0])  # position 0 skipped


def test_operator_save_load_round_trip(tiny_sae, tmp_path):
    from saes.clamp import SAEClampOperator
    from workbench.models import load_subject, save_checkpoint
    from workbench.operators import get_operator, make_config

    subject, trained = tiny_sae
    base_dir = save_checkpoint(subject.model, subject.tokenizer, tmp_path / "base")
    base = load_subject(str(base_dir), device="cpu")
    sae_dir = save_sae(trained, tmp_path / "sae")
    facts = _facts()
    op = get_operator("sae_clamp")
    assert isinstance(op, SAEClampOperator) and op.family == "suppression-intended"
    cfg = make_config("sae_clamp", [f"sae={sae_dir}", "n_features=5",
                                    "max_retain_rate=0.5"])
    edit = op.apply(base, facts.forget, facts.retain, cfg)
    assert edit.kind == "intervention" and edit.metrics["features"]
    feats = [row["feature"] for row in edit.metrics["features"]]
    assert 0 < len(feats) <= 5
    prompt = facts.forget[0].prompt
    assert (_logits(edit.subject, prompt) - _logits(base, prompt)).abs().max() > 1e-3
    out = edit.save(tmp_path / "edit")
    assert (out / "edit.json").exists()
    again = load_subject(str(out), device="cpu")
    assert [iv.features for iv in again.interventions] == [tuple(feats)]
    assert torch.allclose(_logits(again, prompt), _logits(edit.subject, prompt), atol=1e-5)


def test_operator_trains_an_sae_on_the_fly(tiny_sae):
    from workbench.operators import get_operator, make_config

    subject, _ = tiny_sae
    facts = _facts()
    cfg = make_config("sae_clamp", {"layer": 1, "width": 64, "k": 4, "tokens": 400,
                                    "epochs": 2, "n_features": 3, "max_retain_rate": 0.5,
                                    "prose": False})
    edit = get_operator("sae_clamp").apply(subject, facts.forget, facts.retain, cfg)
    assert edit.metrics["sae"]["source"] == "on-the-fly"
    assert edit.metrics["sae"]["hook"] == "blocks.1.hook_resid_post"
    assert 0 < len(edit.subject.interventions[-1].features) <= 3


# ----- views -------------------------------------------------------------------------------

def test_feature_view(tiny_sae):
    import plotly.graph_objects as go

    from saes.views import feature_view, rates_figure, text_latents

    subject, trained = tiny_sae
    loaded = _loaded(trained)
    tl = text_latents(subject, loaded, TEXTS[:8])
    z = torch.cat([t[1:] for t in tl.latents])
    f = int(torch.argmax((z > 0).sum(0)))
    view = feature_view(subject, loaded, f, TEXTS[:8], tl=tl)
    assert isinstance(view.histogram, go.Figure) and isinstance(view.logits, go.Figure)
    assert view.contexts_html.count("<span") > 5 and f"feature {f}" in view.contexts_html
    assert len(view.promoted) == 10 and len(view.suppressed) == 10
    assert view.promoted[0][1] >= view.promoted[-1][1] > view.suppressed[0][1]
    fig = rates_figure([FeatureStat(f, 0.5, 0.0, 1.0, 0.0, 0.5)])
    assert [t.name for t in fig.data] == ["forget", "retain"]
    with pytest.raises(WorkbenchError):
        feature_view(subject, loaded, 10_000, TEXTS[:2], tl=tl)


# ----- quality targets (slow) --------------------------------------------------------------

@pytest.mark.slow
def test_default_sae_on_bundled_model_meets_quality_targets(bundled):
    """The default SAE at layer 15: EV >= 0.7, loss recovered >= 80%, dead <= 20%."""
    from workbench.corpus import default_corpus

    trained = train_sae(bundled, default_corpus(), SAETrainConfig(layer=15), progress=False)
    m = trained.metrics
    print(f"default SAE: {m}, {trained.train_seconds:.0f} s incl. capture")  # shown with -s
    assert m.explained_variance >= 0.7, m
    assert m.loss_recovered >= 0.8, m
    assert m.dead_fraction <= 0.2, m
    assert m.ce_clean <= m.ce_spliced < m.ce_zero_ablation


def test_entity_specificity_counts_features_that_stand_for_one_entity():
    from saes.features import specificity_of

    ents = ["A", "A", "B", "B", "C", "C"]
    fires = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0],
                          [0, 1, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    # feature 0: only A's prompts (specific); 1: everyone; 2: half of A and of B; 3: never
    spec = specificity_of(fires, ents, {"A", "B"})
    assert (spec.alive, spec.specific, spec.entities, spec.covered, spec.forget_covered) == \
        (3, 1, 3, 1, 1)
    assert specificity_of(fires, ents, {"C"}).forget_covered == 0
