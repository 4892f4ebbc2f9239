"""The operator interface: typed configs with a seed, a name registry, `key=value` overrides.

Config fields are declared with `workbench.options.option` (a doc, `Literal` choices, bounds) and
checked when the config is built, so a bad value fails before any model loads."""

from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.edits import Edit
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.options import FieldSpec, check_fields, field_specs, option, parse_value
from workbench.registry import Registry


@dataclass(frozen=True)
class OperatorConfig:
    """Base of every operator config: subclasses add fields declared with `option(default, doc)`;
    every value is checked against its type, choices and bounds on construction."""

    seed: int = option(0, "random seed: the same seed and inputs give the same edit")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # a list (from JSON or a form) becomes a tuple
            if isinstance(value := getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(value))
        check_fields(self)


class Operator:
    """Subclass, set the class attributes, implement `apply`, decorate with `@register_operator`.

    `apply(subject, forget, retain, config)` must not modify `subject` (weight operators work on
    `subject.clone()`); it returns an `Edit` whose `subject` is the edited model."""

    name: ClassVar[str]
    family: ClassVar[str]  # "removal-intended" | "suppression-intended"
    kind: ClassVar[str]  # "weights" | "intervention"
    touches: ClassVar[str]  # one line: what it changes
    config_cls: ClassVar[type[OperatorConfig]] = OperatorConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: OperatorConfig) -> Edit:
        raise NotImplementedError

    def make_edit(self, subject: Subject, edited: Subject, config: OperatorConfig,
                  started: float, **timings: float) -> Edit:
        """Wrap an edited subject with provenance (chain inherited from `subject`)."""
        prior = subject.meta.get("chain", [])
        edit = Edit(operator=self.name, family=self.family, kind=self.kind,
                    config=dataclasses.asdict(config), seed=config.seed, subject=edited,
                    base=subject.meta.get("base", subject.source), chain=list(prior),
                    timings={"total_s": round(time.perf_counter() - started, 3), **timings})
        edited.meta.update({"chain": edit.chain, "base": edit.base})
        return edit


# Core operators register on import of `workbench.operators`; plug-ins (saes' `sae_clamp`)
# through the `workbench.operators` entry-point group.
OPERATORS: Registry[type[Operator]] = Registry("operator", group="workbench.operators",
                                               name_of=lambda cls: cls.name)


def register_operator(cls: type[Operator]) -> type[Operator]:
    """Class decorator: add an operator to `OPERATORS` under its `name` (snake_case, unique)."""
    return OPERATORS.register(cls.name, cls)


def get_operator(name: str) -> Operator:
    import workbench.operators  # noqa: F401  (the core operator modules register on import)

    return OPERATORS[name]()


def make_config(name: str, overrides: dict[str, Any] | list[str] | None = None,
                seed: int | None = None) -> OperatorConfig:
    """Build an operator's config from defaults plus overrides (`key=value` strings or a dict)."""
    cls = get_operator(name).config_cls
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise WorkbenchError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v.strip()
        overrides = pairs
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise WorkbenchError(f"operator {name!r} has no config key(s) {unknown}; "
                             f"its keys are {sorted(fields)}")
    try:
        typed = {k: parse_value(v, hints[k], k) if isinstance(v, str) else v
                 for k, v in overrides.items()}
        return cls(**typed)
    except WorkbenchError as e:
        raise type(e)(f"operator {name!r}: {e}") from None


def config_fields(name: str) -> list[FieldSpec]:
    """Every config field of operator `name` (type, choices, default, doc), as the CLI listing
    and the app's forms show it."""
    return field_specs(get_operator(name).config_cls)


def require_facts(forget: FactSet, retain: FactSet | None = None, what: str = "") -> None:
    """Clear errors for empty inputs."""
    if len(forget) == 0:
        raise WorkbenchError(f"{what}: the forget set is empty; nothing to unlearn")
    if retain is not None and len(retain) == 0:
        raise WorkbenchError(f"{what}: this config needs retain facts, but the retain set is empty")
