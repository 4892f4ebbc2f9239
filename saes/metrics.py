"""SAE quality on held-out text: explained variance, L0, dead features, loss recovered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from saes.activations import MAX_CHARS, collect_activations, token_mask
from saes.hooks import splice
from workbench.batching import chunks, encode
from workbench.models import Subject


@dataclass(frozen=True)
class SAEMetrics:
    """`loss_recovered` = (CE_zero - CE_spliced) / (CE_zero - CE_clean), next-token loss on
    held-out text with the hook's activation replaced by the SAE reconstruction (spliced) or by
    zeros (zero ablation), at every position but the first when `skip_first`."""

    explained_variance: float
    mean_l0: float
    dead_fraction: float  # features that never fire on the training activations
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    loss_recovered: float
    eval_tokens: int


@torch.no_grad()
def _encode_chunks(sae, acts: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """(sum of squared errors per dim-sum, L0 per token, features that fired) over `acts`."""
    sq, l0, fired = [], [], torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=acts.device)
    for start in range(0, acts.shape[0], chunk):
        x = acts[start:start + chunk].to(sae.W_dec.dtype)
        z = sae.encode(x)
        sq.append((sae.decode(z) - x).pow(2).sum(-1))
        l0.append((z > 0).sum(-1).float())
        fired |= (z > 0).any(0)
    return torch.cat(sq), torch.cat(l0), fired


@torch.no_grad()
def feature_fired(sae, acts: Tensor) -> Tensor:
    """[d_sae] bool: which features fire at least once on `acts`."""
    return _encode_chunks(sae, acts)[2]


@torch.no_grad()
def next_token_losses(subject: Subject, sae, hook: str, texts: Sequence[str],
                      skip_first: bool = True, batch_size: int = 16) -> dict[str, float]:
    """Mean next-token CE on `texts`: clean, with the SAE spliced in, with the hook zeroed."""
    sae_dtype = sae.W_dec.dtype

    def spliced(h: Tensor, pos: Tensor) -> Tensor:
        rec = sae.decode(sae.encode(h.to(sae_dtype))).to(h.dtype)
        return torch.where((pos > 0 if skip_first else pos >= 0)[..., None], rec, h)

    def zeroed(h: Tensor, pos: Tensor) -> Tensor:
        return torch.where((pos > 0 if skip_first else pos >= 0)[..., None], 0.0, h)

    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    count = 0
    texts = [t[:MAX_CHARS] for t in texts]
    for sl in chunks(len(texts), batch_size):
        b = encode(subject.tokenizer, texts[sl], device=subject.device)
        target = b.input_ids[:, 1:]
        mask = token_mask(b.lengths, b.input_ids.shape[1], False)[:, 1:]
        count += int(mask.sum())
        for name, fn in (("clean", None), ("spliced", spliced), ("zero", zeroed)):
            handles = splice(subject.model, hook, fn) if fn is not None else []
            try:
                logits = subject.model(input_ids=b.input_ids,
                                       attention_mask=b.attention_mask).logits[:, :-1]
            finally:
                for h in handles:
                    h.remove()
            ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target,
                                                   reduction="none")
            sums[name] += float((ce * mask).sum())
    return {k: v / max(count, 1) for k, v in sums.items()} | {"tokens": count}


@torch.no_grad()
def evaluate_sae(subject: Subject, sae, hook: str, texts: Sequence[str],
                 train_acts: Tensor | None = None, skip_first: bool = True) -> SAEMetrics:
    """Quality of `sae` at `hook` on held-out `texts` (dead features: on `train_acts`)."""
    acts = collect_activations(subject, texts, hook, skip_first=skip_first, progress=False)
    sq, l0, fired = _encode_chunks(sae, acts)
    total_var = (acts - acts.mean(0)).pow(2).sum(-1)
    ev = 1.0 - float(sq.sum() / total_var.sum())
    if train_acts is not None:
        fired = feature_fired(sae, train_acts)
    ce = next_token_losses(subject, sae, hook, texts, skip_first)
    denom = ce["zero"] - ce["clean"]
    recovered = (ce["zero"] - ce["spliced"]) / denom if abs(denom) > 1e-9 else float("nan")
    return SAEMetrics(explained_variance=round(ev, 4), mean_l0=round(float(l0.mean()), 2),
                      dead_fraction=round(1.0 - float(fired.float().mean()), 4),
                      ce_clean=round(ce["clean"], 4), ce_spliced=round(ce["spliced"], 4),
                      ce_zero_ablation=round(ce["zero"], 4),
                      loss_recovered=round(recovered, 4), eval_tokens=int(ce["tokens"]))
