"""`sae_clamp`: suppress the forget facts by clamping their SAE features negative.

When a selected feature is active at a token, its activation `a` becomes `-multiplier * a` (or
the fixed `clamp_value`), as in Farrell et al. (2024). The SAE is spliced *with its error term*:
the hook adds `decode(edited latents) - decode(original latents)` to the clean activation, so a
token where no selected feature fires keeps exactly its clean activation (SAE reconstruction
error never leaks into the model), and the edit is suppression by construction: the weights that
store the fact are untouched.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from saes.features import FeatureStat, forget_features
from saes.hooks import splice
from saes.load import LoadedSAE, check_fits, decoder_rows, load_sae, resolve_sae
from saes.train import Arch, SAETrainConfig, train_sae
from workbench.capture import Point
from workbench.corpus import fact_texts, readable_prose
from workbench.edits import Edit
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.operators.base import Operator, OperatorConfig
from workbench.options import option

_SAE_DIR = "sae"


class SAEClamp:
    """Forward hook that clamps selected SAE features (error term kept: untouched tokens exact).

    A plug-in intervention kind: registered through the `workbench.interventions` entry point
    `sae_clamp` (pyproject.toml), so a saved edit re-loads it without importing this module."""

    type = "sae_clamp"

    def __init__(self, loaded: LoadedSAE, features: tuple[int, ...], multiplier: float = 20.0,
                 clamp_value: float | None = None, positions: tuple[int, ...] = (),
                 skip_first: bool = True, stats: tuple[FeatureStat, ...] = (),
                 name: str = "sae_clamp") -> None:
        d_sae = loaded.sae.cfg.d_sae
        if not features:
            raise WorkbenchError("sae_clamp needs at least one feature to clamp")
        bad = [f for f in features if not 0 <= f < d_sae]
        if bad:
            raise WorkbenchError(f"feature index(es) {bad} out of range: the SAE has {d_sae}")
        self.loaded, self.features = loaded, tuple(int(f) for f in features)
        self.multiplier, self.clamp_value = float(multiplier), clamp_value
        self.positions, self.skip_first = tuple(int(p) for p in positions), skip_first
        self.stats, self.name = tuple(stats), name
        self._idx = torch.tensor(self.features)
        # decode() is linear when there is no run-time output normalisation: then
        # decode(z') - decode(z) == (z' - z)[:, F] @ rows[F], which touches only F's rows.
        self._linear = loaded.sae.cfg.normalize_activations in ("none", "expected_average_only_in")

    @property
    def hook(self) -> str:
        return self.loaded.hook

    def check(self, subject: Subject) -> None:
        check_fits(self.loaded, subject)

    def _where(self, pos: Tensor) -> Tensor:
        ok = pos > 0 if self.skip_first else torch.ones_like(pos, dtype=torch.bool)
        if self.positions:
            ok &= torch.isin(pos, torch.tensor(self.positions, device=pos.device))
        return ok

    @torch.no_grad()
    def edit(self, h: Tensor, pos: Tensor) -> Tensor:
        """h + decode(edited latents) - decode(latents), only where a selected feature fires."""
        sae = self.loaded.sae
        x = h.to(sae.W_dec.dtype)
        z = sae.encode(x)
        idx = self._idx.to(z.device)
        zf = z[..., idx]
        active = (zf > 0) & self._where(pos)[..., None]
        if not bool(active.any()):
            return h
        target = (torch.full_like(zf, float(self.clamp_value)) if self.clamp_value is not None
                  else -self.multiplier * zf)
        new_f = torch.where(active, target, zf)
        if self._linear:
            delta = (new_f - zf) @ decoder_rows(sae, idx)
        else:
            z_new = z.clone()
            z_new[..., idx] = new_f
            delta = sae.decode(z_new) - sae.decode(z)
        return h + delta.to(h.dtype)

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        self.loaded.sae.to(next(model.parameters()).device)
        return splice(model, self.hook, self.edit)

    def save(self, directory: Path) -> dict[str, Any]:
        """SAE weights in SAELens' format under `sae/`, plus the feature list in the spec."""
        sae = self.loaded.sae
        out = Path(directory) / _SAE_DIR
        (sae.save_inference_model if hasattr(sae, "save_inference_model") else sae.save_model)(out)
        meta = {**self.loaded.meta, "hook_name": self.hook, "source": self.loaded.source}
        (out / "workbench_sae.json").write_text(json.dumps(meta, indent=2, default=str))
        return {"type": self.type, "name": self.name, "hook": self.hook,
                "features": list(self.features), "multiplier": self.multiplier,
                "clamp_value": self.clamp_value, "positions": list(self.positions),
                "skip_first": self.skip_first, "stats": [asdict(s) for s in self.stats]}

    @classmethod
    def load(cls, directory: Path, spec: dict[str, Any]) -> SAEClamp:
        loaded = load_sae(Path(directory) / _SAE_DIR, hook=spec["hook"])
        return cls(loaded, tuple(spec["features"]), spec.get("multiplier", 20.0),
                   spec.get("clamp_value"), tuple(spec.get("positions", ())),
                   spec.get("skip_first", True),
                   tuple(FeatureStat(**s) for s in spec.get("stats", ())), spec.get("name",
                                                                                    cls.type))


@dataclass(frozen=True)
class SAEClampConfig(OperatorConfig):
    """Which SAE (a directory or `release:<release>:<id>`; none: train one on the fly), which
    features (explicit, or the top `n_features` forget features) and how hard to clamp."""

    sae: str | None = option(None, "SAE directory or release:<release>:<id> (None: train one "
                                   "on the forget + retain texts)")
    features: tuple[int, ...] = option((), "feature indices to clamp (empty: the top "
                                           "`n_features` forget features)")
    n_features: int = option(20, "how many forget features to clamp when none are given", ge=1)
    max_retain_rate: float = option(0.01, "a forget feature fires on at most this share of "
                                          "retain prompts", ge=0, le=1)
    multiplier: float = option(20.0, "an active feature a becomes -multiplier * a")
    clamp_value: float | None = option(None, "if set, active features become this value "
                                             "instead")
    positions: tuple[int, ...] = option((), "absolute token positions to edit (empty: all)")
    skip_first: bool = option(True, "leave each input's first token (the attention sink) alone")
    layer: int | None = option(None, "block of the SAE's hook (None: the SAE's own, or the "
                                     "middle block for an on-the-fly SAE)")
    point: Point = option("resid_post", "hook point within that block")
    arch: Arch = option("topk", "on-the-fly SAE: architecture")
    width: int = option(1024, "on-the-fly SAE: number of features", ge=1)
    k: int = option(16, "on-the-fly SAE: topk active features per token", ge=1)
    tokens: int = option(30_000, "on-the-fly SAE: activation vectors to train on", ge=1)
    epochs: int = option(10, "on-the-fly SAE: passes over them", ge=1)
    prose: bool = option(True, "on-the-fly SAE: mix standard-library prose into its corpus "
                               "when the tokenizer reads English")


def train_for_facts(subject: Subject, forget: FactSet, retain: FactSet,
                    config: SAEClampConfig, progress: bool = False) -> LoadedSAE:
    """A small SAE for `subject` trained on the operator's own facts (and prose if readable),
    each text its own context, as the clamp will see the prompts."""
    texts = fact_texts(forget) + fact_texts(retain)
    if config.prose:
        texts += readable_prose(subject.tokenizer, limit=1500)
    rng = torch.Generator().manual_seed(config.seed)
    texts = [texts[i] for i in torch.randperm(len(texts), generator=rng).tolist()]
    cfg = SAETrainConfig(layer=config.layer, point=config.point, arch=config.arch,
                         width=config.width, k=config.k, tokens=config.tokens,
                         epochs=config.epochs, seed=config.seed, eval_texts=32, pack=False)
    trained = train_sae(subject, texts, cfg, progress=progress)
    meta = trained.meta() | {"trained_on_the_fly": True}
    return LoadedSAE(trained.sae, trained.hook, "on-the-fly", meta)


class SAEClampOperator(Operator):
    """Registered through the `workbench.operators` entry point `sae_clamp` (pyproject.toml)."""

    name = "sae_clamp"
    family = "suppression-intended"
    kind = "intervention"
    touches = "SAE features of the forget facts at one hook point, clamped negative when active"
    config_cls = SAEClampConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: SAEClampConfig) -> Edit:
        started = time.perf_counter()
        if config.sae is not None:
            hook = None if config.layer is None else f"blocks.{config.layer}.hook_{config.point}"
            loaded = resolve_sae(config.sae, device=subject.device, hook=hook)
        else:
            loaded = train_for_facts(subject, forget, retain, config)
        check_fits(loaded, subject)
        t_sae = time.perf_counter() - started
        stats: list[FeatureStat] = []
        features = tuple(config.features)
        if not features:
            stats = forget_features(subject, loaded, forget, retain, top=config.n_features,
                                    max_retain_rate=config.max_retain_rate)
            features = tuple(s.feature for s in stats)
            if not features:
                raise WorkbenchError(
                    f"no SAE feature at {loaded.hook} fires on the forget prompts while staying "
                    f"below max_retain_rate={config.max_retain_rate} on retain prompts")
        iv = SAEClamp(loaded, features, config.multiplier, config.clamp_value, config.positions,
                      config.skip_first, tuple(stats))
        edited = subject.with_interventions(iv)
        edit = self.make_edit(subject, edited, config, started, sae_s=round(t_sae, 3))
        edit.metrics["sae"] = {"hook": loaded.hook, "source": loaded.source,
                               "d_sae": loaded.sae.cfg.d_sae,
                               "quality": loaded.meta.get("metrics")}
        edit.metrics["features"] = [asdict(s) for s in stats] or list(features)
        return edit
