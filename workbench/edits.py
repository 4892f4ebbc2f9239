"""`Edit`: what an unlearning operator produced, with provenance, savable and loadable.

A weight edit saves a standard HF checkpoint; an inference-time edit saves only its
interventions (a small JSON spec plus safetensors) and the spec of the base weights. Either way
`edit.json` holds the whole chain of edits, and `load_subject(DIR)` gives the edited subject back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from workbench.atomic import atomic_dir, write_text
from workbench.errors import IncompatibleSubjectsError, ModelLoadError, WorkbenchError, one_line
from workbench.inputs import read_json
from workbench.models import Intervention, Subject, check_finite, load_subject
from workbench.registry import Registry

FAMILIES = ("removal-intended", "suppression-intended")
KINDS = ("weights", "intervention")
# Intervention kinds by their saved `type`; plug-ins (saes' `sae_clamp`) come through the
# `workbench.interventions` entry-point group. Look kinds up through `intervention_kinds()`.
INTERVENTIONS: Registry[type] = Registry("intervention kind", group="workbench.interventions",
                                         name_of=lambda cls: cls.type)


def register_intervention(cls: type) -> type:
    """Class decorator: make an intervention kind loadable from its saved spec (`cls.type`)."""
    return INTERVENTIONS.register(cls.type, cls)


def intervention_kinds() -> Registry[type]:
    """Every kind a saved edit may hold, whatever the caller imported first: the core kinds
    (their modules are imported here, not at the top, because they import this module) and the
    plug-ins of the `workbench.interventions` entry-point group."""
    from workbench import controls  # noqa: F401  (output_suppressor)
    from workbench.operators import interventions  # noqa: F401  (steer, prompt_prefix)

    return INTERVENTIONS


def intervention_types() -> list[str]:
    """The registered intervention kinds (core kinds and plug-ins), sorted."""
    return sorted(intervention_kinds())


def intervention_from_spec(directory: Path, spec: dict[str, Any]) -> Intervention:
    """Rebuild a saved intervention from its spec (`spec["type"]`; edits saved before kinds
    were snake_case wrote kebab-case, read as the same kind); a bad spec or file raises
    `ModelLoadError` naming the intervention's directory."""
    kind = str(spec.get("type")).replace("-", "_")
    kinds = intervention_kinds()
    if kind not in kinds:
        raise ModelLoadError(f"unknown intervention kind {spec.get('type')!r} in {directory}; "
                             f"known: {sorted(kinds)}")
    if not Path(directory).is_dir():
        raise ModelLoadError(f"{directory}: the {kind} intervention's directory is missing")
    try:
        return kinds[kind].load(directory, spec)
    except KeyError as e:
        raise ModelLoadError(f"{directory}: the saved {kind} intervention has no field {e} in "
                             f"edit.json") from e
    except ModelLoadError:
        raise
    except (TypeError, ValueError, WorkbenchError) as e:
        raise ModelLoadError(f"{directory}: bad saved {kind} intervention ({one_line(e)})") from e


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Edit:
    """One applied unlearning edit. `chain` lists the provenance of every edit so far, this last
    (pass the edits before this one: construction appends this one)."""

    operator: str
    family: str
    kind: str
    config: dict[str, Any]
    seed: int
    subject: Subject
    base: str  # model spec of the weights the chain started from
    chain: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"before": {...}, "after": {...}}
    created: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        # `chain` comes in as the edits before this one. Always append: two runs of one operator
        # with one config in the same second are two entries (comparing with the last entry
        # dropped the second when the rounded timings matched too)
        self.chain = list(self.chain) + [self.provenance()]

    def provenance(self) -> dict[str, Any]:
        return {"operator": self.operator, "family": self.family, "kind": self.kind,
                "config": self.config, "seed": self.seed, "created": self.created,
                "timings": self.timings}

    def to_json(self) -> dict[str, Any]:
        return {"operator": self.operator, "family": self.family, "kind": self.kind,
                "config": self.config, "seed": self.seed, "base": self.base,
                "chain": self.chain, "timings": self.timings, "created": self.created,
                "architecture": architecture(self.subject), **self.metrics}

    @property
    def has_weights(self) -> bool:
        """Whether any edit of the chain changed weights (then the checkpoint must be saved)."""
        return any(c.get("kind") == "weights" for c in self.chain)

    def save(self, out: str | Path) -> Path:
        """Write the edit to `out` atomically (never over the base checkpoint)."""
        out = Path(out).resolve()
        for src in (self.base, self.subject.source):
            if Path(src).exists() and Path(src).resolve() == out:
                raise ModelLoadError(f"Refusing to overwrite the input checkpoint {out}")
        with atomic_dir(out) as tmp:
            if self.has_weights:
                self.subject.model.save_pretrained(tmp, safe_serialization=True)
                self.subject.tokenizer.save_pretrained(tmp)
            specs = []
            for i, iv in enumerate(self.subject.interventions):
                d = tmp / "interventions" / f"{i:02d}-{iv.name}"
                d.mkdir(parents=True)
                specs.append({"dir": str(d.relative_to(tmp)), **iv.save(d)})
            doc = self.to_json() | {"interventions": specs}
            (tmp / "edit.json").write_text(json.dumps(doc, indent=2, default=str))
        return out


def read_edit_json(directory: Path) -> dict[str, Any]:
    """A saved edit's `edit.json`, checked for the fields loading needs."""
    path = Path(directory) / "edit.json"
    doc = read_json(path, ModelLoadError)
    specs = doc.get("interventions", [])
    if not isinstance(specs, list) or not all(
            isinstance(s, dict) and isinstance(s.get("dir"), str) and isinstance(s.get("type"), str)
            for s in specs):
        raise ModelLoadError(f"{path}: 'interventions' must be a list of objects with string "
                             f"fields 'dir' and 'type'")
    if not isinstance(doc.get("base", ""), str):
        raise ModelLoadError(f"{path}: 'base' must be a model spec (a string)")
    return doc


def architecture(subject: Subject) -> dict[str, Any]:
    """The architecture facts an edit depends on (compared on load)."""
    return {k: getattr(subject.config, k, None)
            for k in ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")}


def check_architecture(doc: dict[str, Any], subject: Subject, directory: Path) -> None:
    """Refuse to attach an edit saved for one architecture onto a subject of another."""
    saved = doc.get("architecture")
    if not saved:
        return
    now = architecture(subject)
    diff = [f"{k}: {saved[k]!r} vs {now.get(k)!r}" for k in saved if saved[k] != now.get(k)]
    if diff:
        raise IncompatibleSubjectsError(
            f"the edit in {directory} was saved for another architecture than {subject.name!r}: "
            + "; ".join(diff))


def load_edit_subject(directory: Path, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None, onto: Subject | None = None,
                      over: Subject | None = None) -> Subject:
    """The edited subject saved in `directory` (weights and/or interventions re-attached).

    `onto` attaches a saved intervention edit to an already loaded subject instead of its
    recorded base; a mismatched architecture raises `IncompatibleSubjectsError`. `over` is
    `load_subject`'s: the weights are read over an already loaded subject's."""
    directory = Path(directory)
    doc = read_edit_json(directory)
    if (directory / "config.json").exists():
        if onto is not None:
            raise WorkbenchError(f"{directory} is a weight edit; it cannot be attached onto "
                                 f"another subject (load it on its own)")
        # `load_subject` reads the weights and re-attaches any saved interventions itself.
        return load_subject(str(directory), device=device, dtype=dtype, over=over)
    if onto is None:
        if not doc.get("base"):
            raise ModelLoadError(f"{directory / 'edit.json'}: no 'base' (the model spec the "
                                 f"interventions attach to)")
        try:
            onto = load_subject(doc["base"], device=device, dtype=dtype, over=over)
        except ModelLoadError as e:
            raise ModelLoadError(f"{directory}: cannot load its base model: {e}") from e
    return attach_saved_interventions(directory, doc, onto)


def attach_saved_interventions(directory: Path, doc: dict[str, Any], subject: Subject) -> Subject:
    """`subject` with the interventions saved under `directory` attached, and the edit's chain."""
    directory = Path(directory)
    check_architecture(doc, subject, directory)
    check_finite(subject.model, str(directory))
    ivs = [intervention_from_spec(directory / s["dir"], s) for s in doc.get("interventions", [])]
    for iv in ivs:
        iv.check(subject) if hasattr(iv, "check") else None
    edited = subject.with_interventions(*ivs, source=str(directory)) if ivs else subject
    edited.meta.update({"name": str(directory), "edit": doc, "chain": doc.get("chain", []),
                        "base": doc.get("base", subject.source)})
    return edited


def cached_edit(out: Path, key: dict[str, Any], make: Callable[[], Edit],
                device: torch.device | str | None = None, stamp: str = "edit_key.txt") -> Subject:
    """The edited subject saved in `out` when it was made from the same inputs (`key`: anything
    JSON-serialisable naming them, e.g. base model, facts, operator and config), else `make()`'s
    edit, saved there with a stamp of `key` for next time."""
    out = Path(out)
    tag = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stamp_file = out / stamp
    if stamp_file.exists() and stamp_file.read_text().strip() == tag:
        return load_edit_subject(out, device=device)
    edit = make()
    edit.save(out)
    write_text(stamp_file, tag + "\n")
    return edit.subject
