"""Find the SAE features of the forget facts (after Farrell et al., 2024, "Applying sparse
autoencoders to unlearn knowledge in language models").

Each feature's activations are gathered on every token of the forget prompts and of the retain
prompts. A feature is a *forget feature* when it fires much more, and more strongly, on forget
tokens than on retain tokens, and almost never on retain tokens (Farrell et al. keep features
whose retain sparsity is below a small threshold, then rank by forget sparsity). The score is the
difference of mean activations over all tokens (zeros included), i.e.
`forget_rate * forget_mean - retain_rate * retain_mean`, which rewards both frequency and size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from saes.activations import collect_activations
from saes.load import LoadedSAE
from workbench.capture import capture
from workbench.errors import WorkbenchError
from workbench.facts import FactSet, phrasings
from workbench.models import Subject


@dataclass(frozen=True)
class FeatureStat:
    """One feature's firing statistics on forget vs retain tokens (means are over firing tokens)."""

    feature: int
    forget_rate: float
    retain_rate: float
    forget_mean: float
    retain_mean: float
    score: float


@torch.no_grad()
def latents(loaded: LoadedSAE, acts: Tensor, chunk: int = 4096) -> Tensor:
    """SAE feature activations [tokens, d_sae] for a [tokens, d] activation matrix."""
    sae = loaded.sae
    return torch.cat([sae.encode(acts[i:i + chunk].to(sae.W_dec.device, sae.W_dec.dtype))
                      for i in range(0, acts.shape[0], chunk)])


@torch.no_grad()
def prompt_latents(subject: Subject, loaded: LoadedSAE, prompts: Sequence[str],
                   position: str = "all", skip_first: bool = True) -> Tensor:
    """Latents on the prompts' tokens: every token (`all`) or each prompt's last token."""
    if not prompts:
        raise WorkbenchError("no prompts to compute feature activations on")
    if position == "all":
        acts = collect_activations(subject, prompts, loaded.hook, skip_first=skip_first,
                                   progress=False)
    elif position == "last":
        layer, point = loaded.layer, loaded.hook.split("hook_")[1]
        acts = capture(subject, prompts, [layer], [point], position="last").layer(layer, point)
    else:
        raise WorkbenchError(f"position must be 'all' or 'last', not {position!r}")
    return latents(loaded, acts.float())


def _stats(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    fires = z > 0
    rate = fires.float().mean(0)
    mean_active = (z * fires).sum(0) / fires.sum(0).clamp(min=1)
    return rate, mean_active, z.clamp(min=0).mean(0)


def rank_features(forget_z: Tensor, retain_z: Tensor, top: int = 20,
                  max_retain_rate: float = 0.01, min_forget_rate: float = 0.0,
                  ) -> list[FeatureStat]:
    """Features ranked by forget-vs-retain mean activation, keeping those that (almost) never
    fire on retain tokens (`retain_rate <= max_retain_rate`) and do fire on forget tokens."""
    if forget_z.ndim != 2 or retain_z.ndim != 2 or forget_z.shape[1] != retain_z.shape[1]:
        raise WorkbenchError(f"latent matrices must be [tokens, d_sae] of equal width, got "
                             f"{tuple(forget_z.shape)} and {tuple(retain_z.shape)}")
    f_rate, f_mean, f_avg = _stats(forget_z.float())
    r_rate, r_mean, r_avg = _stats(retain_z.float())
    score = f_avg - r_avg
    keep = (r_rate <= max_retain_rate) & (f_rate > min_forget_rate) & (score > 0)
    idx = torch.nonzero(keep).squeeze(-1)
    order = idx[torch.argsort(score[idx], descending=True, stable=True)][:top]
    return [FeatureStat(int(i), round(float(f_rate[i]), 4), round(float(r_rate[i]), 4),
                        round(float(f_mean[i]), 4), round(float(r_mean[i]), 4),
                        round(float(score[i]), 5)) for i in order]


def _prompts(facts: FactSet, paraphrases: bool) -> list[str]:
    return [p for _, p in phrasings(facts, paraphrases)]


def forget_features(subject: Subject, loaded: LoadedSAE, forget: FactSet, retain: FactSet,
                    top: int = 20, max_retain_rate: float = 0.01, position: str = "all",
                    paraphrases: bool = True) -> list[FeatureStat]:
    """The SAE features of the forget facts, best first, with their statistics."""
    forget.require_nonempty("forget set")
    retain.require_nonempty("retain set")
    fz = prompt_latents(subject, loaded, _prompts(forget, paraphrases), position)
    rz = prompt_latents(subject, loaded, _prompts(retain, paraphrases), position)
    return rank_features(fz, rz, top, max_retain_rate)


@dataclass(frozen=True)
class EntitySpecificity:
    """How many SAE features stand for a single entity: at `position`, a feature is specific to
    an entity when it fires on at least `min_rate` of that entity's prompts and on less than
    `max_other` of every other entity's."""

    alive: int  # features that fire on any of the prompts
    specific: int
    entities: int  # entities in the prompts
    covered: int  # entities with at least one specific feature
    forget_covered: int  # ... among the forget entities


@torch.no_grad()
def entity_specificity(subject: Subject, loaded: LoadedSAE, forget: FactSet, retain: FactSet,
                       position: str = "last", min_rate: float = 0.5,
                       max_other: float = 0.1) -> EntitySpecificity:
    """Does the SAE have a feature per entity? Clamping can only single out the forget entities
    if it does (after the feature-per-concept reading of Farrell et al., 2024)."""
    rows = [(f, p) for f, p in phrasings([*forget, *retain]) if f.entity]
    if not rows:
        raise WorkbenchError("entity specificity needs facts with an `entity`")
    fires = prompt_latents(subject, loaded, [p for _, p in rows], position) > 0
    return specificity_of(fires, [f.entity for f, _ in rows], {f.entity for f in forget},
                          min_rate, max_other)


def specificity_of(fires: Tensor, entities: Sequence[str], forget_names: set[str],
                   min_rate: float = 0.5, max_other: float = 0.1) -> EntitySpecificity:
    """`EntitySpecificity` from a [prompts, features] firing matrix and each prompt's entity."""
    names = sorted(set(entities))
    col = {e: i for i, e in enumerate(names)}
    member = torch.zeros(len(entities), len(names))
    for r, e in enumerate(entities):
        member[r, col[e]] = 1.0
    rate = (member.T @ fires.float()) / member.sum(0)[:, None]  # entity x feature
    top2 = rate.topk(min(2, len(names)), dim=0).values
    other = top2[1] if len(names) > 1 else torch.zeros_like(top2[0])
    specific = (top2[0] >= min_rate) & (other < max_other)
    owners = {names[i] for i in rate[:, specific].argmax(0).tolist()}
    return EntitySpecificity(int(fires.any(0).sum()), int(specific.sum()), len(names), len(owners),
                             len(owners & forget_names))


def features_table(stats: Sequence[FeatureStat]) -> list[dict]:
    """Rows for a table / DataFrame."""
    return [asdict(s) for s in stats]
