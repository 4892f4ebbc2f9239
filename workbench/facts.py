"""Facts and fact sets: schema, validation with file/line/field errors, JSONL round trip."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from workbench.atomic import write_text
from workbench.errors import FactFileError
from workbench.inputs import read_text

SPLITS = ("forget", "retain", "holdout", "unseen")
_FIELDS = {"id", "prompt", "answer", "split", "paraphrases", "entity", "relation"}


@dataclass(frozen=True)
class Fact:
    """One fact: `prompt` completed by `answer` (the answer includes its leading space)."""

    id: str
    prompt: str
    answer: str
    split: str
    paraphrases: tuple[str, ...] = ()
    entity: str | None = None
    relation: str | None = None

    def __post_init__(self) -> None:
        for name in ("id", "prompt", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"field {name!r} must be a non-empty string")
        if self.split not in SPLITS:
            raise ValueError(f"field 'split' is {self.split!r}; expected one of {SPLITS}")
        if not all(isinstance(p, str) and p.strip() for p in self.paraphrases):
            raise ValueError("field 'paraphrases' must be a list of non-empty strings")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        return {k: v for k, v in d.items() if v not in (None, [])}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fact:
        if not isinstance(d, dict):
            raise ValueError("each line must be a JSON object")
        unknown = set(d) - _FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        for name in ("id", "prompt", "answer", "split"):
            if name not in d:
                raise ValueError(f"missing field {name!r}")
        paraphrases = d.get("paraphrases") or ()
        if isinstance(paraphrases, str) or not isinstance(paraphrases, list | tuple):
            raise ValueError("field 'paraphrases' must be a list of strings")
        return cls(id=d["id"], prompt=d["prompt"], answer=d["answer"], split=d["split"],
                   paraphrases=tuple(paraphrases), entity=d.get("entity"),
                   relation=d.get("relation"))


def phrasings(facts: Iterable[Fact], paraphrases: bool = True) -> list[tuple[Fact, str]]:
    """(fact, prompt) for each fact's prompt and, with `paraphrases`, each of its paraphrases."""
    return [(f, p) for f in facts
            for p in ((f.prompt, *f.paraphrases) if paraphrases else (f.prompt,))]


def unnamed(rows: Iterable[tuple[Fact, str]]) -> list[str]:
    """The prompts of `rows` that do not contain their fact's `entity` (or whose fact has none)."""
    return [p for f, p in rows if not f.entity or f.entity not in p]


@dataclass(frozen=True)
class FactSet:
    """A validated, ordered collection of facts with unique ids."""

    facts: tuple[Fact, ...]
    name: str = "facts"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        dup = [i for i, n in Counter(f.id for f in self.facts).items() if n > 1]
        if dup:
            raise FactFileError(f"{self.name}: duplicate fact id(s) {dup[:5]}")

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self) -> Iterator[Fact]:
        return iter(self.facts)

    def __getitem__(self, i: int) -> Fact:
        return self.facts[i]

    def split(self, name: str) -> FactSet:
        """The facts of one split (may be empty)."""
        if name not in SPLITS:
            raise FactFileError(f"unknown split {name!r}; expected one of {SPLITS}")
        return FactSet(tuple(f for f in self.facts if f.split == name), f"{self.name}:{name}")

    @property
    def forget(self) -> FactSet:
        return self.split("forget")

    @property
    def retain(self) -> FactSet:
        return self.split("retain")

    @property
    def holdout(self) -> FactSet:
        return self.split("holdout")

    @property
    def unseen(self) -> FactSet:
        return self.split("unseen")

    def splits(self) -> list[str]:
        """The splits present, in canonical order."""
        present = {f.split for f in self.facts}
        return [s for s in SPLITS if s in present]

    def require_nonempty(self, what: str = "fact set") -> FactSet:
        if not self.facts:
            raise FactFileError(f"{what} {self.name!r} is empty")
        return self

    def take(self, n: int) -> FactSet:
        return FactSet(self.facts[:n], self.name)

    def filter(self, keep: Iterable[str]) -> FactSet:
        ids = set(keep)
        return FactSet(tuple(f for f in self.facts if f.id in ids), self.name)

    def __add__(self, other: FactSet) -> FactSet:
        return FactSet(self.facts + other.facts, f"{self.name}+{other.name}")

    # ----- I/O -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write JSONL atomically."""
        return write_text(path, "".join(json.dumps(f.to_json(), ensure_ascii=False) + "\n"
                                        for f in self.facts))

    @classmethod
    def load(cls, path: str | Path) -> FactSet:
        """Read JSONL (UTF-8, a BOM is accepted); any problem is reported with the file, line
        and field."""
        path = Path(path)
        if not path.exists():
            raise FactFileError(f"fact file not found: {path}")
        return cls.parse(read_text(path, FactFileError), str(path))

    @classmethod
    def parse(cls, text: str, name: str = "<string>") -> FactSet:
        facts: list[Fact] = []
        seen: dict[str, int] = {}
        for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise FactFileError(f"{name}:{lineno}: invalid JSON ({e.msg})") from e
            try:
                fact = Fact.from_json(d)
            except ValueError as e:
                raise FactFileError(f"{name}:{lineno}: {e}") from e
            if fact.id in seen:
                raise FactFileError(
                    f"{name}:{lineno}: field 'id': duplicate id {fact.id!r} "
                    f"(first on line {seen[fact.id]})"
                )
            seen[fact.id] = lineno
            facts.append(fact)
        if not facts:
            raise FactFileError(f"{name}: no facts (empty set)")
        return cls(tuple(facts), Path(name).stem)


def builtin_facts(name: str = "smollm2") -> FactSet:
    """A fact set shipped with the package (`workbench/data/<name>_facts.jsonl`)."""
    res = resources.files("workbench") / "data" / f"{name}_facts.jsonl"
    if not res.is_file():
        raise FactFileError(f"no built-in fact set named {name!r}")
    fs = FactSet.parse(res.read_text(encoding="utf-8"), f"builtin:{name}")
    return FactSet(fs.facts, name)


def load_facts(spec: str | Path) -> FactSet:
    """A fact file path, or `builtin:<name>` / a bare built-in name."""
    s = str(spec)
    if s.startswith("builtin:"):
        return builtin_facts(s.split(":", 1)[1])
    if not Path(s).exists() and "/" not in s and not s.endswith(".jsonl"):
        return builtin_facts(s)
    return FactSet.load(s)
