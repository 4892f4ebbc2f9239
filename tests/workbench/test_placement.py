"""Placement: the dtype an audit runs in, rows per batch from a GPU's free memory, and models
that accelerate spread over devices (checked on the CPU: a disk-offloaded layer gives the same
hooks-moving-tensors path a multi-GPU map does)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_subject

import workbench.placement as placement
from workbench.behavior import answer_logprobs, greedy_continuations
from workbench.capture import capture
from workbench.errors import WorkbenchError
from workbench.models import Subject, load_subject

PROMPTS = ["The capital of France is", "Two plus two is", "The sky is"]
ANSWERS = [" Paris", " four", " blue"]


def test_dtype_names_and_auto(monkeypatch):
    assert placement.resolve_dtype("auto", "cpu") is torch.float32
    assert placement.resolve_dtype(None, "cpu") is torch.float32
    assert placement.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert placement.resolve_dtype(torch.float16, "cpu") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert placement.resolve_dtype("auto", "cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert placement.resolve_dtype("auto", "cuda:0") is torch.float16
    with pytest.raises(WorkbenchError, match="unknown dtype 'float8'"):
        placement.resolve_dtype("float8", "cpu")


def test_device_names():
    assert placement.resolve_device("cpu") == (torch.device("cpu"), None)
    if not torch.cuda.is_available():
        assert placement.resolve_device("auto") == (torch.device("cpu"), None)
        assert placement.resolve_device(None) == (torch.device("cpu"), None)
    with pytest.raises(WorkbenchError, match="unknown device 'gpu7'"):
        placement.resolve_device("gpu7")


def test_rows_fit_the_free_memory_and_shrink_with_width(bundled):
    cfg = bundled.config
    rows = [placement.rows_for_memory(free, cfg, 2, 64) for free in (2**28, 2**32, 2**36)]
    assert rows == sorted(rows) and rows[0] < rows[-1] <= placement.MAX_ROWS
    for free in (2**28, 2**32):
        r = placement.rows_for_memory(free, cfg, 2, 64)
        assert r & (r - 1) == 0  # a power of two: the same memory always gives the same batches
        assert r * 64 * placement.bytes_per_token(cfg, 2) <= free * placement.FREE_SHARE
        assert placement.rows_for_memory(free, cfg, 2, 512) < r
    assert placement.rows_for_memory(1, cfg, 4, 64) == 1  # never none


def test_backward_rows_fit_the_budget_and_never_exceed_the_batch(bundled, toy_original):
    b = placement.backward_bytes_per_token(bundled.config, 4)
    rows = [placement.backward_rows(bundled, w, 32) for w in (8, 21, 64, 10_000)]
    assert rows == sorted(rows, reverse=True) and rows[-1] == 1  # longer rows: fewer; never 0
    for w, r in zip((8, 21, 64), rows, strict=False):
        assert r & (r - 1) == 0 and r * w * b <= placement.BACKWARD_BYTES
        assert 2 * r * w * b > placement.BACKWARD_BYTES or r == 32  # the most that fit
    assert placement.backward_rows(toy_original, 21, 32) == 32  # a small model: the whole batch
    assert placement.backward_rows(toy_original, 21, 5) == 5


def test_rows_per_batch_is_the_callers_on_cpu_and_measured_once_on_a_gpu(bundled, monkeypatch):
    assert placement.rows_per_batch(bundled, PROMPTS, 7) == 7
    calls = []

    def free(device):
        calls.append(device)
        return 2**33, 2**34

    monkeypatch.setattr(torch.cuda, "mem_get_info", free)
    monkeypatch.setattr(placement, "_FREE", {})
    gpu = SimpleNamespace(device=torch.device("cuda", 0), tokenizer=bundled.tokenizer,
                          config=bundled.config, dtype=torch.bfloat16)
    width = max(len(bundled.tokenizer(p)["input_ids"]) for p in PROMPTS)
    want = placement.rows_for_memory(2**33, bundled.config, 2, width)
    assert placement.rows_per_batch(gpu, PROMPTS, 7) == want
    assert placement.rows_per_batch(gpu, PROMPTS, 7, extra=200) < want  # generation grows rows
    assert len(calls) == 1
    assert placement.batch_bytes(torch.device("cpu"), 123) == 123
    assert placement.batch_bytes(torch.device("cuda", 0), 123) == int(2**33 * placement.FREE_SHARE)


def test_auto_device_map_loads_the_same_model(bundled, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import workbench.models as models

    tiny = make_tiny_subject(bundled.tokenizer, n_layers=3)
    tiny.save(tmp_path / "ck")
    maps, load = [], AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        maps.append(kwargs.get("device_map"))
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    # the GPU case's code path on the CPU: accelerate's "auto" map (all on the CPU here)
    monkeypatch.setattr(models, "resolve_device", lambda d: (torch.device("cpu"), "auto"))
    loaded = load_subject(str(tmp_path / "ck"), device="auto")
    assert maps == ["auto"]
    assert np.allclose(answer_logprobs(loaded, PROMPTS, ANSWERS)[0],
                       answer_logprobs(tiny, PROMPTS, ANSWERS)[0], atol=1e-5)


def test_a_model_spread_by_accelerate_scores_captures_and_is_never_forked(bundled, tmp_path):
    from transformers import AutoModelForCausalLM

    from workbench.model_sharing import share_unchanged

    tiny = make_tiny_subject(bundled.tokenizer, n_layers=3)
    tiny.save(tmp_path / "ck")
    where = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
             "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu",
             "lm_head": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ck", device_map=where,
                                                 offload_folder=str(tmp_path / "off"))
    spread = Subject(model=model.eval(), tokenizer=bundled.tokenizer, source="spread")
    assert placement.spread(model) and not placement.spread(tiny.model)
    for a, b in zip(answer_logprobs(spread, PROMPTS, ANSWERS),
                    answer_logprobs(tiny, PROMPTS, ANSWERS), strict=True):
        assert np.allclose(a, b, atol=1e-5)
    assert torch.allclose(capture(spread, PROMPTS, [0, 1, 2]).stack(),
                          capture(tiny, PROMPTS, [0, 1, 2]).stack(), atol=1e-5)
    assert greedy_continuations(spread, PROMPTS, 3) == greedy_continuations(tiny, PROMPTS, 3)
    # an edit read over a spread model loads in full instead of forking it
    over = load_subject(str(tmp_path / "ck"), device="cpu", over=spread)
    assert all(p.device.type == "cpu" for p in over.model.parameters())
    assert share_unchanged(spread, over) < sum(p.numel() * 4 for p in over.model.parameters())
