"""What every world with a retrain oracle shares: its layout on disk, build lock and evaluation.

A world is a directory holding `facts.jsonl` (facts split by person into forget / retain /
holdout / unseen), `original/` (a model trained on forget + retain + holdout), `oracle/` (the same
recipe on retain + holdout only: the gold standard of "removed") and `world.json` (config, hash,
accuracies, timings). Two builders write it: `workbench.toyworld` (a tiny Llama trained from
scratch) and `workbench.pretrained_world` (a pretrained model fine-tuned on fictitious people).
Every command that takes a model directory and a fact file therefore takes either world.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.inputs import read_json

TOY = "toy"


@dataclass(frozen=True)
class World:
    """A built world on disk: facts, the original model and the retrain oracle."""

    root: Path
    original_dir: Path
    oracle_dir: Path
    facts_path: Path
    stats: dict[str, Any]

    @classmethod
    def at(cls, root: Path) -> World:
        root = Path(root)
        stats = read_json(root / "world.json")
        return cls(root, root / "original", root / "oracle", root / "facts.jsonl", stats)

    @property
    def name(self) -> str:
        return str(self.stats.get("name", "toyworld"))

    def facts(self) -> FactSet:
        fs = FactSet.load(self.facts_path)
        return FactSet(fs.facts, self.name, meta={"seed": self.stats["config"]["seed"]})

    def original(self, device: Any = None):
        from workbench.models import load_subject

        return load_subject(str(self.original_dir), device=device)

    def oracle(self, device: Any = None, over: Any = None):
        """The retrain oracle; `over` (the original, loaded) is `load_subject`'s: the tensors
        the oracle holds unchanged are shared with it (for models that are only read)."""
        from workbench.models import load_subject

        return load_subject(str(self.oracle_dir), device=device, over=over)


def chance_rates(attributes: dict[str, tuple[tuple[str, ...], Any]]) -> dict[str, float]:
    """Accuracy of guessing uniformly per attribute (`{name: (values, templates)}`), and their
    mean (`"mean"`)."""
    rates = {rel: 1.0 / len(values) for rel, (values, _) in attributes.items()}
    rates["mean"] = sum(rates.values()) / len(attributes)
    return rates


def is_complete(root: Path, config_hash: str) -> bool:
    """Whether `root` holds a finished build of the config with hash `config_hash`."""
    try:
        stats = json.loads((root / "world.json").read_text())
    except (OSError, ValueError):
        return False
    if stats.get("config_hash") != config_hash:
        return False
    needed = [root / "facts.jsonl"] + [root / d / f for d in ("original", "oracle")
                                       for f in ("config.json", "model.safetensors",
                                                 "tokenizer.json")]
    return all(p.exists() for p in needed)


@contextmanager
def world_lock(path: Path, progress: bool) -> Iterator[None]:
    """An exclusive advisory lock (POSIX `flock`; a no-op where there is none), so concurrent
    callers (parallel test sessions) build a world once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"world: waiting for another build of {path.name[1:-5]}", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def split_accuracies(model_dir: Path, facts: FactSet, paraphrases: slice = slice(None),
                     threads: int | None = 1) -> dict[str, Any]:
    """Per split: greedy accuracy on the canonical prompts (the user-facing measure), mean answer
    log-prob, and teacher-forced accuracy on each fact's paraphrases `paraphrases` (a slice of
    `Fact.paraphrases`: all of them, or only those the model was not trained on). `threads`
    (None: as set): one is fastest for tiny models and identical across machines' core counts."""
    import torch

    from workbench.behavior import accuracy_by_split, evaluate, summarize
    from workbench.models import load_subject

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        subject = load_subject(str(model_dir), device="cpu")
        canonical = accuracy_by_split(subject, facts, batch_size=128)
        picked = FactSet(tuple(_with_paraphrases(f, f.paraphrases[paraphrases]) for f in facts),
                         facts.name)
        para = summarize(evaluate(subject, picked, generate=False, use_paraphrases=True,
                                  batch_size=256))
    finally:
        torch.set_num_threads(before)
    return {split: {"accuracy": round(row["accuracy"], 4), "logprob": round(row["logprob"], 4),
                    "n": row["n"], "paraphrase_accuracy": round(para[split]["accuracy"], 4)}
            for split, row in canonical.items()}


def _with_paraphrases(fact: Fact, paraphrases: Sequence[str]) -> Fact:
    return Fact(fact.id, fact.prompt, fact.answer, fact.split, tuple(paraphrases), fact.entity,
                fact.relation)


def build_world(base: str = TOY, out: Path | None = None, seed: int = 0, force: bool = False,
                progress: bool = True) -> World:
    """Build (or reuse from the cache) the world on `base`: `"toy"` for the tiny Llama trained
    from scratch, or a model spec (e.g. `smollm2-135m`) for that model fine-tuned on fictitious
    people. Both write the same layout."""
    if base == TOY:
        from workbench.toyworld import build_toyworld

        return build_toyworld(out, seed=seed, force=force, progress=progress)
    from workbench.models import resolve_spec

    try:
        resolve_spec(base)
    except WorkbenchError as e:
        raise WorkbenchError(f"--base {base!r}: expected {TOY!r} or a model spec ({e})") from e
    from workbench.pretrained_world import PeopleConfig, build_pretrained_world

    return build_pretrained_world(out, PeopleConfig(base=base, seed=seed), force=force,
                                  progress=progress)
