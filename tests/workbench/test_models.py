"""Model loading: bundled, checkpoint dir, GGUF, hub-cache layout, forks, and clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import make_tiny_subject

from workbench.errors import IncompatibleSubjectsError, ModelLoadError
from workbench.models import (
    bundled_gguf_path,
    check_compatible,
    fork_module,
    list_models,
    load_subject,
    resolve_spec,
)

PROMPT = "The capital of France is"


def _logits(subject, text=PROMPT):
    ids = subject.tokenizer(text, return_tensors="pt").input_ids.to(subject.device)
    with torch.no_grad():
        return subject.model(ids).logits[0, -1]


def test_bundled_model_answers_a_real_fact(bundled):
    assert bundled.n_layers == 30 and bundled.d_model == 576
    assert bundled.config.vocab_size == 49152
    ids = bundled.tokenizer(PROMPT, return_tensors="pt").input_ids
    out = bundled.model.generate(ids, max_new_tokens=2, do_sample=False,
                                 pad_token_id=bundled.tokenizer.pad_token_id)
    assert bundled.tokenizer.decode(out[0, ids.shape[1]:]).strip().startswith("Paris")


def test_gguf_path_and_bundled_name_give_the_same_model(bundled):
    via_file = load_subject(str(bundled_gguf_path()), device="cpu")
    assert torch.equal(_logits(via_file), _logits(bundled))
    assert resolve_spec(str(bundled_gguf_path()))[0] == "gguf"


def test_checkpoint_dir_round_trip_and_never_overwrites_input(tmp_path, bundled):
    tiny = make_tiny_subject(bundled.tokenizer)
    out = tiny.save(tmp_path / "ckpt")
    assert (out / "model.safetensors").exists()
    again = load_subject(str(out), device="cpu")
    assert torch.allclose(_logits(again), _logits(tiny), atol=1e-6)
    with pytest.raises(ModelLoadError, match="overwrite"):
        again.save(out)


def _fake_hub_cache(root, repo_id, src):
    """Lay out `src` like the HF hub cache: models--org--name/{refs/main,snapshots/<sha>/...}."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo_id.replace('/', '--')}"
    snap = base / "snapshots" / sha
    shutil.copytree(src, snap)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(sha)


def test_hub_id_loads_from_a_local_hub_cache(tmp_path, monkeypatch, bundled):
    tiny = make_tiny_subject(bundled.tokenizer, seed=3)
    tiny.save(tmp_path / "src")
    _fake_hub_cache(tmp_path / "hub", "wb-test/tiny-llama", tmp_path / "src")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_spec("wb-test/tiny-llama")[0] == "hub"
    hub = load_subject("wb-test/tiny-llama", device="cpu")
    assert torch.allclose(_logits(hub), _logits(tiny), atol=1e-6)


def test_hub_id_missing_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Cannot load 'nobody/no-such-model'"):
        load_subject("nobody/no-such-model")


@pytest.mark.parametrize("spec,msg", [("./no/such/dir", "not found"),
                                      ("/tmp/missing-model.gguf", "GGUF file not found")])
def test_missing_paths_are_clear_errors(spec, msg):
    with pytest.raises(ModelLoadError, match=msg):
        load_subject(spec)


def test_dir_without_config_is_rejected(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="config.json"):
        load_subject(str(tmp_path))


def test_nan_weights_are_refused(tmp_path, bundled):
    tiny = make_tiny_subject(bundled.tokenizer)
    with torch.no_grad():
        tiny.model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    tiny.save(tmp_path / "nan")
    with pytest.raises(ModelLoadError, match="NaN"):
        load_subject(str(tmp_path / "nan"))


def test_compatibility_check_names_the_mismatch(bundled):
    check_compatible(bundled, bundled)
    tiny = make_tiny_subject(bundled.tokenizer)
    with pytest.raises(IncompatibleSubjectsError, match="num_hidden_layers: 30 vs 2"):
        check_compatible(bundled, tiny)


def test_tokenizer_mismatch_is_reported(bundled):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]")
    a = make_tiny_subject(tok)
    b = make_tiny_subject(bundled.tokenizer)
    b.model.config.vocab_size = a.model.config.vocab_size  # same shape, different tokenizer
    with pytest.raises(IncompatibleSubjectsError, match="tokenizers"):
        check_compatible(a, b)


def test_fork_shares_weights_but_not_hooks(bundled):
    tiny = make_tiny_subject(bundled.tokenizer)
    tree = fork_module(tiny.model)
    for (n, p), (_, q) in zip(tiny.model.named_parameters(), tree.named_parameters()):
        assert p.data_ptr() == q.data_ptr(), n
    tree.model.layers[0].register_forward_hook(lambda m, a, o: (o[0] * 0,) + tuple(o[1:])
                                                if isinstance(o, tuple) else o * 0)
    assert not tiny.model.model.layers[0]._forward_hooks


def test_hooked_and_nnsight_views_match_hf(bundled):
    ids = bundled.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        hf = bundled.model(ids).logits
        tl = bundled.hooked(ids)
    assert (hf - tl).abs().max() < 1e-3
    assert type(bundled.model.model.layers[0]).__name__ == "LlamaDecoderLayer"  # untouched


def test_list_models_names_the_bundled_model(bundled):
    rows = list_models()
    assert any(r["spec"] == "smollm2-135m" and r["cached"] == "yes" for r in rows)


def test_fingerprint_follows_weights_and_hooks_not_where_they_came_from(toy_original, toy_facts,
                                                                        tmp_path):
    from workbench.controls import output_only_suppressor
    from workbench.models import fingerprint, load_subject

    h = fingerprint(toy_original)
    toy_original.save(tmp_path / "copy")
    assert fingerprint(load_subject(str(tmp_path / "copy"), device="cpu")) == h
    assert fingerprint(output_only_suppressor(toy_original, toy_facts.forget)) != h
    # a hook edit saved and loaded back is the same edit
    from workbench.edits import load_edit_subject
    from workbench.operators import get_operator, make_config

    steer = get_operator("steer").apply(toy_original, toy_facts.forget, toy_facts.retain,
                                        make_config("steer", {}))
    steer.save(tmp_path / "steer")
    assert fingerprint(load_edit_subject(tmp_path / "steer", device="cpu")) == \
        fingerprint(steer.subject)
    changed = toy_original.clone()
    with torch.no_grad():
        next(changed.model.parameters()).view(-1)[0] += 1.0
    assert fingerprint(changed) != h and fingerprint(toy_original) == h


def test_share_unchanged_holds_equal_tensors_once_and_changes_no_output(bundled):
    import copy

    from workbench.model_sharing import share_unchanged

    a = make_tiny_subject(bundled.tokenizer)
    b = copy.deepcopy(a)
    name = "model.layers.1.mlp.up_proj.weight"
    with torch.no_grad():
        dict(b.model.named_parameters())[name].mul_(2.0)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        out_a, out_b = a.model(ids).logits, b.model(ids).logits
    pa = dict(a.model.named_parameters())
    total = sum(p.numel() * p.element_size() for p in b.model.parameters())
    changed = pa[name].numel() * pa[name].element_size()
    assert share_unchanged(a, b) == total - changed
    pb = dict(b.model.named_parameters())
    assert pb[name] is not pa[name]  # the edited tensor stays the edit's own
    assert all(pb[k] is pa[k] for k in pa if k != name)
    assert b.model.get_output_embeddings().weight is b.model.get_input_embeddings().weight
    with torch.no_grad():
        assert torch.equal(a.model(ids).logits, out_a) and torch.equal(b.model(ids).logits, out_b)
    assert share_unchanged(a, b) == 0  # nothing left to share


def test_loading_over_a_model_reads_only_what_changed(tmp_path, bundled):
    import json

    from safetensors.torch import load_file, save_file

    from workbench.models import load_subject

    a = make_tiny_subject(bundled.tokenizer)
    a.save(tmp_path / "a")
    base = load_subject(str(tmp_path / "a"), device="cpu")
    name = "model.layers.1.mlp.up_proj.weight"
    edited = load_subject(str(tmp_path / "a"), device="cpu")
    with torch.no_grad():
        dict(edited.model.named_parameters())[name].mul_(2.0)
    edited.save(tmp_path / "b")
    full = load_subject(str(tmp_path / "b"), device="cpu")
    over = load_subject(str(tmp_path / "b"), device="cpu", over=base)
    pa, pb = dict(base.model.named_parameters()), dict(over.model.named_parameters())
    assert pb[name] is not pa[name] and torch.equal(pb[name], full.model.get_parameter(name))
    assert all(pb[k] is pa[k] for k in pa if k != name)
    assert over.model.get_output_embeddings().weight is over.model.get_input_embeddings().weight
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(over.model(ids).logits, full.model(ids).logits)
        assert not torch.equal(over.model(ids).logits, base.model(ids).logits)
    assert torch.equal(base.model.get_parameter(name), a.model.get_parameter(name))  # untouched

    # a checkpoint that does not fit the base (another config, a missing tensor) loads in full
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-3
    (tmp_path / "b" / "config.json").write_text(json.dumps(cfg))
    other = load_subject(str(tmp_path / "b"), device="cpu", over=base)
    assert not any(p is q for p in other.model.parameters() for q in base.model.parameters())
    weights = load_file(str(tmp_path / "a" / "model.safetensors"))
    weights.pop("model.norm.weight")
    (tmp_path / "c").mkdir()
    for f in (tmp_path / "a").iterdir():
        if f.name != "model.safetensors":
            (tmp_path / "c" / f.name).write_bytes(f.read_bytes())
    save_file(weights, str(tmp_path / "c" / "model.safetensors"), metadata={"format": "pt"})
    partial = load_subject(str(tmp_path / "c"), device="cpu", over=base)
    assert not any(p is q for p in partial.model.parameters() for q in base.model.parameters())
