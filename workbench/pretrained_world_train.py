"""Fine-tune a pretrained causal LM on (prompt, answer) pairs, cheaply, for the real-model world.

Only the MLP output matrices (`down_proj`) of a band of middle blocks are trained, and only in the
null space of what those matrices read on ordinary text (after AlphaEdit, Fang et al. 2025): the
update `dW = V @ N.T`, where `N` spans the directions of the MLP's hidden activations that carry
the last `1 - energy` of their variance on prose from the standard library's docstrings, so the
model's outputs on ordinary text barely move. Without the constraint the fine-tuning that taught
the fictitious people cost the model most of its general knowledge (`workbench.pretrained_world`).

The blocks below the band
are frozen, so their output for each training sequence is computed once and fed to the rest of
the model as `inputs_embeds` with the lower blocks taken out; the loss is read at answer
positions only, so the unembedding runs on a few rows. The shortcut is checked against the full
model before training (it is exact for Llama-style models, whose embedding output is used as is)
and dropped when it does not match (e.g. models that scale or add to their input embeddings).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def finetune_and_save(base: str, pairs: Sequence[tuple[str, str]], cfg: Any, seed: int, out: Path,
                      name: str, bases: Path, progress: bool = False) -> dict[str, Any]:
    """Load `base`, fine-tune it on `pairs` with `cfg` (a `FineTuneConfig`) inside the null
    spaces saved in `bases` (`save_null_spaces`), save it to `out`.

    Deterministic for a seed on one machine (fixed thread count, deterministic algorithms).
    Returns the final loss, epochs, trained blocks, and the wall and CPU seconds taken."""
    from workbench.models import load_subject, save_checkpoint
    from workbench.toyworld_train import training_settings

    with training_settings(cfg.threads):
        subject = load_subject(base, device="cpu", dtype=torch.float32)
        log = (lambda m: print(f"people world [{name}] {m}", flush=True)) if progress else None
        info = finetune(subject.model, subject.tokenizer, pairs, cfg, seed,
                        load_null_spaces(bases), log=log)
        save_checkpoint(subject.model, subject.tokenizer, Path(out))
    return info


def finetune(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], cfg: Any,
             seed: int, null_spaces: dict[int, torch.Tensor],
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the `down_proj` of each block `i` in `null_spaces` (basis `[d_mlp, r]`) within that
    null space, on the answer tokens of `pairs` (AdamW, linear warmup then linear decay to 10%);
    stop at the first epoch whose mean loss is below `target_loss`; merge the updates."""
    from workbench.batching import encode
    from workbench.models import decoder_layers

    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    layers = decoder_layers(model)
    lo = min(null_spaces)
    for p in model.parameters():
        p.requires_grad_(False)
    deltas = {i: _NullSpaceDelta(layers[i].mlp.down_proj, basis)
              for i, basis in null_spaces.items()}
    for i, delta in deltas.items():
        layers[i].mlp.down_proj = delta
    params = [d.V for d in deltas.values()]
    batch = encode(tokenizer, [p for p, _ in pairs], [a for _, a in pairs])
    n = len(pairs)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * max(0.1, 1 - s / total))
    gen = torch.Generator().manual_seed(seed)
    upper = _UpperModel(model, layers, lo, batch)
    model.train()
    loss_v, epoch = float("nan"), 0
    try:
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            ep_loss = 0.0
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                loss = upper.loss(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                ep_loss += loss.item()
            loss_v = ep_loss / steps_per_epoch
            done = loss_v < cfg.target_loss
            if log is not None:
                log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_v:.4f} "
                    f"({time.perf_counter() - t0:.0f} s)")
            if done:
                break
    finally:
        upper.restore()
        with torch.no_grad():
            for i, delta in deltas.items():
                layers[i].mlp.down_proj = delta.merged()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return {"final_loss": loss_v, "epochs": epoch + 1,
            "blocks": [lo, max(null_spaces) + 1],
            "null_space_dims": {str(i): int(b.shape[1]) for i, b in null_spaces.items()},
            "cached_prefix": upper.shortcut, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


class _NullSpaceDelta(nn.Module):
    """`linear(x) + (x @ N) @ V.T`: a trainable update `V @ N.T` of `linear`'s weight confined to
    the input directions spanned by `N` (written here: no library parametrises this)."""

    def __init__(self, linear: nn.Linear, basis: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("N", basis.to(linear.weight.dtype), persistent=False)
        self.V = nn.Parameter(torch.zeros(linear.out_features, basis.shape[1],
                                          dtype=linear.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (x @ self.N) @ self.V.T

    def merged(self) -> nn.Linear:
        self.linear.weight += self.V.detach() @ self.N.T
        return self.linear


def null_spaces(model: nn.Module, tokenizer: Any, texts: Sequence[str], blocks: range,
                energy: float, max_tokens: int = 48) -> dict[int, torch.Tensor]:
    """For each block in `blocks`, an orthonormal basis `[d_mlp, r]` of the directions of its
    `down_proj` input that carry the last `1 - energy` of that input's second moment on `texts`
    (the top directions, holding `energy` of it, are what ordinary text uses: left alone)."""
    from workbench.models import decoder_layers

    layers = decoder_layers(model)
    moments: dict[int, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def hook(i: int):
        def fn(_module, args, _out):
            x = args[0][mask[0]].double()
            moments[i] = moments.get(i, 0) + x.T @ x
        return fn

    handles = [layers[i].mlp.down_proj.register_forward_hook(hook(i)) for i in blocks]
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                    max_length=max_tokens)
    try:
        with torch.no_grad():
            for s in range(0, len(texts), 32):
                mask[:] = [enc["attention_mask"][s:s + 32].bool()]
                model(input_ids=enc["input_ids"][s:s + 32],
                      attention_mask=enc["attention_mask"][s:s + 32], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for i, m in moments.items():
        values, vectors = torch.linalg.eigh(m)  # ascending
        share = values.flip(0).cumsum(0) / values.sum()
        keep = int((share < energy).sum()) + 1  # top directions left alone
        out[i] = vectors[:, : len(values) - keep].float().contiguous()
    return out


def save_null_spaces(spaces: dict[int, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({str(i): b for i, b in spaces.items()}, str(path))
    return path


def load_null_spaces(path: Path) -> dict[int, torch.Tensor]:
    from safetensors.torch import load_file

    return {int(k): v for k, v in sorted(load_file(str(path)).items(), key=lambda kv: int(kv[0]))}



class _UpperModel:
    """The model from block `lo` up, fed the cached output of the frozen blocks below (when that
    reproduces the full model), with logits computed at answer positions only."""

    def __init__(self, model: nn.Module, layers: nn.ModuleList, lo: int, batch: Any):
        self.model, self.layers, self.batch = model, layers, batch
        self.lower = list(layers)[:lo]
        self.inner = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.cached = self.shortcut = False
        if lo == 0:
            return
        with torch.no_grad():
            hidden = []
            for i in range(0, len(batch.input_ids), 64):
                out = self.inner(input_ids=batch.input_ids[i:i + 64],
                                 attention_mask=batch.attention_mask[i:i + 64],
                                 output_hidden_states=True, use_cache=False)
                hidden.append(out.hidden_states[lo])
            self.prefix = torch.cat(hidden)
            probe = torch.arange(min(8, len(batch.input_ids)))
            want = self._logits(probe, full=True)
            del self.layers[:lo]
            self.cached = True
            got = self._logits(probe, full=False)
            if not torch.allclose(want, got, atol=1e-3, rtol=1e-3):
                self.restore()
        self.shortcut = self.cached  # whether training runs on the cached prefix

    def _logits(self, idx: torch.Tensor, full: bool) -> torch.Tensor:
        b = self.batch.rows(idx)
        if full or not self.cached:
            h = self.inner(input_ids=b.input_ids, attention_mask=b.attention_mask,
                           use_cache=False)
        else:
            h = self.inner(inputs_embeds=self.prefix[idx, :b.input_ids.shape[1]],
                           attention_mask=b.attention_mask, use_cache=False)
        m = b.answer_mask[:, :-1]
        return self.head(h.last_hidden_state[:, :-1][m])

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        b = self.batch.rows(idx)
        target = b.input_ids[:, 1:][b.answer_mask[:, :-1]]
        return nn.functional.cross_entropy(self._logits(idx, full=False), target)

    def restore(self) -> None:
        """Put the lower blocks back (idempotent)."""
        if self.cached:
            for i, block in enumerate(self.lower):
                self.layers.insert(i, block)
            self.cached = False
