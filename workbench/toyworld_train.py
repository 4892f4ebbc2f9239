"""Tokenizer, tiny Llama and training loop for the toy world (see `workbench.toyworld`).

The tokenizer is a word-level vocabulary over every word of the world (all four splits, so the
original and the oracle share one vocabulary and stay comparable) with a whitespace
pre-tokenizer: tokenizing a prompt and its answer separately and concatenating gives the same ids
as tokenizing the joined text, which is what `workbench.batching.encode` relies on.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and recipe; identical for the original model and the retrain oracle."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 256
    # Training stops after the first epoch whose mean loss is below `target_loss` (the facts are
    # memorised), at most after `epochs`: a fixed epoch count left some world seeds short of
    # memorising and drove others far into saturation, where answer probabilities sit so close to
    # 1 that gradient-based unlearning barely moves them (bench/results/toy_seeds.json).
    epochs: int = 60
    target_loss: float = 1e-3
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_positions: int = 64


def build_tokenizer(texts: Sequence[str]):
    """A word-level `PreTrainedTokenizerFast` (BOS prepended) over the words of `texts`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words: dict[str, None] = {}
    pre = pre_tokenizers.Whitespace()
    for text in texts:
        for w, _ in pre.pre_tokenize_str(text):
            words.setdefault(w, None)
    specials = [PAD, BOS, EOS, UNK]
    vocab = {t: i for i, t in enumerate(specials + sorted(words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre
    tk.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        padding_side="right", model_max_length=64,
    )


def build_model(tokenizer, cfg: TrainConfig, seed: int):
    """A freshly initialised `LlamaForCausalLM` sized by `cfg` (weights depend only on `seed`)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, do_sample=False,
    )
    return model


def train_lm(model, tokenizer, pairs: Sequence[tuple[str, str]], cfg: TrainConfig, seed: int,
             log: Callable[[str], None] | None = None,
             on_epoch: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """Train on the answer tokens of (prompt, answer) pairs with AdamW and a warmup-cosine
    schedule; a fixed seed fixes the shuffling. Returns the final loss, the steps, and the wall
    and CPU seconds taken (CPU seconds are what the training would take on an idle core)."""
    from workbench.batching import encode

    t0, c0 = time.perf_counter(), time.process_time()
    batch = encode(tokenizer, [p for p, _ in pairs], [a for _, a in pairs])
    n = len(pairs)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "embed" not in name]
    no_decay = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in name)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(seed)
    model.train()
    step, loss_v = 0, float("nan")
    for epoch in range(cfg.epochs):
        order = list(range(n))
        rng.shuffle(order)
        ep_loss = 0.0
        for s in range(steps_per_epoch):
            idx = torch.tensor(order[s * cfg.batch_size:(s + 1) * cfg.batch_size])
            width = int(batch.lengths[idx].max())
            ids = batch.input_ids[idx, :width]
            mask = batch.attention_mask[idx, :width]
            amask = batch.answer_mask[idx, :width]
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = ids[:, 1:]
            m = amask[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits[m], target[m])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            ep_loss += loss.item()
        loss_v = ep_loss / steps_per_epoch
        if on_epoch is not None:
            on_epoch(epoch, loss_v)
        done = loss_v < cfg.target_loss
        if log is not None and (epoch % 10 == 9 or epoch == cfg.epochs - 1 or done):
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_v:.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
        if done:
            break
    model.eval()
    return {"final_loss": loss_v, "steps": step, "epochs": epoch + 1,
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def train_and_save(tokenizer, pairs: Sequence[tuple[str, str]], cfg: TrainConfig, seed: int,
                   out: Path, name: str, progress: bool = False) -> dict[str, Any]:
    """Build, train (single-threaded, deterministic algorithms) and save one model to `out`.

    One thread makes the weights bit-identical whatever the machine's core count, and lets two
    models train side by side on two cores.
    """
    from workbench.models import save_checkpoint

    with training_settings(threads=1):
        model = build_model(tokenizer, cfg, seed)
        log = (lambda m: print(f"toyworld [{name}] {m}", flush=True)) if progress else None
        info = train_lm(model, tokenizer, pairs, cfg, seed, log=log)
        save_checkpoint(model, tokenizer, Path(out))
    return info


@contextmanager
def training_settings(threads: int) -> Iterator[None]:
    """Within: `threads` torch threads, deterministic algorithms, no HF progress bars (each
    world's trainer runs in a worker whose output is its own log lines); restored after."""
    from transformers.utils import logging as hf_logging

    before, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(det)
        if bars:
            hf_logging.enable_progress_bar()


def train_many(jobs: Sequence[dict[str, Any]], workers: int | None = None,
               fn: Callable[..., dict[str, Any]] = train_and_save) -> list[dict[str, Any]]:
    """Run `fn(**job)` (a module-level function, default `train_and_save`) for each job, in
    parallel processes when there are cores."""
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or len(jobs) <= 1:
        return [fn(**job) for job in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        with _bare_main(fn):  # the workers start during the submits
            futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in futures]


@contextmanager
def _bare_main(fn: Callable[..., Any]) -> Iterator[None]:
    """Start spawned workers with an empty `__main__`. A spawned worker first re-runs the
    parent's `__main__` script; under Streamlit (the dashboard's "Build it") `__main__` is a
    page that cannot run outside its server, and a Streamlit AppTest leaves one behind in the
    test process. The workers need none of it when `fn` lives in a module."""
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" or main is None:
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
