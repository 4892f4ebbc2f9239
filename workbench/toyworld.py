"""A synthetic world of fictitious people, a tiny Llama trained on it, and its retrain oracle.

Every person has a made-up one-word name (syllables, so no model has a prior about them) and one
value for each attribute (home city, job, favourite colour, instrument), each stated in three
phrasings. People are split by entity, as in TOFU: `forget` (to be unlearned), `retain`
(operators may train on it), `holdout` (known to the model, never shown to an operator) and
`unseen` (never trained on: non-members for membership tests). The original model is trained on
forget + retain + holdout; the retrain oracle, with the same architecture, recipe and seed, on
retain + holdout only, so it is the gold standard of "removed".
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench import worlds
from workbench.atomic import atomic_dir
from workbench.errors import WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.toyworld_train import TrainConfig
from workbench.worlds import World, is_complete, split_accuracies, world_lock

# Bump when the world generator or the training recipe changes meaning (invalidates caches).
WORLD_VERSION = 1

# attribute -> (values, templates); the first template is the canonical prompt.
ATTRIBUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "city": (
        ("Lisbon", "Oslo", "Kyoto", "Lima", "Cairo", "Dublin", "Nairobi", "Quito", "Hanoi",
         "Vienna"),
        ("{name} lives in", "The home town of {name} is", "{name} has a house in"),
    ),
    "job": (
        ("baker", "pilot", "nurse", "lawyer", "farmer", "painter", "teacher", "plumber",
         "chemist", "sailor"),
        ("{name} works as a", "The job of {name} is", "By profession {name} is a"),
    ),
    "color": (
        ("red", "blue", "green", "yellow", "purple", "orange", "silver", "black"),
        ("The favourite colour of {name} is", "{name} likes the colour", "{name} mostly wears"),
    ),
    "instrument": (
        ("violin", "piano", "guitar", "flute", "drums", "cello", "trumpet", "harp"),
        ("{name} plays the", "The instrument of {name} is the", "In the band {name} plays the"),
    ),
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "th", "sh", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "ei")
_CODAS = ("", "", "n", "r", "l", "s", "th", "k", "x")


@dataclass(frozen=True)
class WorldConfig:
    """What determines a toy world; its hash names the cache directory."""

    seed: int = 0
    # People per split (200 in all). Forget and holdout are equal (30 people x 4 attributes =
    # 120 facts each, enough to tell a model that knows them from chance, `chance_rates`) so
    # "forgotten" vs "never shown to the operator" compare like for like. Retain is the largest
    # trained split, so retain accuracy is stable and operators have plenty to regularise on
    # (forget is 30 of the 140 trained people, near TOFU's forget10). Unseen people cost nothing
    # to train, so there are more of them: membership tests get 240 non-member facts. Training
    # cost grows with the trained people, which is what keeps building both models cheap on a
    # CPU (each world's `world.json` has its training times; `bench/toy_seeds.py` writes the
    # build times of its seeds to `bench/results/toy_seeds.json`).
    n_forget: int = 30
    n_retain: int = 80
    n_holdout: int = 30
    n_unseen: int = 60
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = WORLD_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        """Hash of the config and the attribute tables (so editing them invalidates caches)."""
        blob = json.dumps([self.to_json(), ATTRIBUTES], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS)


def _make_names(rng: random.Random, n: int) -> list[str]:
    """`n` distinct made-up one-word names (2-3 syllables; each is one token of the vocabulary)."""
    names: list[str] = []
    # never reuse a word of the templates or the answers (e.g. "Lima") as a name
    seen = {w.lower() for values, templates in ATTRIBUTES.values()
            for w in " ".join(values + templates).split()}
    while len(names) < n:
        k = rng.choice((2, 2, 3))
        w = ("".join(_syllable(rng) for _ in range(k)) + rng.choice(_CODAS)).capitalize()
        if w.lower() not in seen:
            seen.add(w.lower())
            names.append(w)
    return names


def make_facts(config: WorldConfig | None = None) -> FactSet:
    """The world's facts (deterministic in `config.seed`): one per (person, attribute)."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    sizes = {"forget": config.n_forget, "retain": config.n_retain,
             "holdout": config.n_holdout, "unseen": config.n_unseen}
    names = _make_names(rng, sum(sizes.values()))
    order = list(range(len(names)))
    rng.shuffle(order)
    facts: list[Fact] = []
    start = 0
    split_of: dict[int, str] = {}
    for split, k in sizes.items():
        for i in order[start:start + k]:
            split_of[i] = split
        start += k
    for i, name in enumerate(names):
        for rel, (values, templates) in ATTRIBUTES.items():
            value = rng.choice(values)
            prompts = [t.format(name=name) for t in templates]
            facts.append(Fact(id=f"p{i:03d}-{rel}", prompt=prompts[0], answer=f" {value}",
                              split=split_of[i], paraphrases=tuple(prompts[1:]), entity=name,
                              relation=rel))
    return FactSet(tuple(facts), "toyworld", meta={"seed": config.seed})


def chance_rates() -> dict[str, float]:
    """Accuracy of guessing uniformly per attribute, and their mean (`"mean"`)."""
    return worlds.chance_rates(ATTRIBUTES)


def _pairs(facts: FactSet) -> list[tuple[str, str]]:
    """Training pairs: every phrasing of every fact."""
    return [(p, f.answer) for f in facts for p in (f.prompt, *f.paraphrases)]


def _texts(facts: FactSet) -> list[str]:
    return [t for p, a in _pairs(facts) for t in (p, a)]


# The toy world is one kind of `World` (kept under its old name for callers).
ToyWorld = World


def default_root(config: WorldConfig) -> Path:
    from workbench.models import cache_root

    return cache_root() / "toyworld" / config.hash()


def build_toyworld(out: Path | None = None, seed: int = 0, force: bool = False,
                   progress: bool = True, config: WorldConfig | None = None,
                   workers: int | None = None) -> ToyWorld:
    """Build (or reuse) the toy world in `out`: facts.jsonl, original/, oracle/, world.json.

    The default `out` is `cache_root()/toyworld/<config hash>`; an existing complete build with
    the same config hash is reused instantly unless `force`. The build happens in a sibling
    temporary directory that is renamed into place, so a crash never leaves half a world, and
    under a lock file, so concurrent callers (parallel test sessions) build it once. The two
    models train side by side in `workers` processes (default: one per core, at most two).
    """
    config = config or WorldConfig(seed=seed)
    root = Path(out) if out is not None else default_root(config)
    if not force and is_complete(root, config.hash()):
        return ToyWorld.at(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with world_lock(root.parent / f".{root.name}.lock", progress):
        if not force and is_complete(root, config.hash()):  # built by someone else while we waited
            return ToyWorld.at(root)
        return _build(root, config, progress, workers)


def _build(root: Path, config: WorldConfig, progress: bool, workers: int | None) -> ToyWorld:
    from workbench.toyworld_train import build_tokenizer, train_many

    log = (lambda m: print(f"toyworld: {m}", flush=True)) if progress else None
    t0 = time.perf_counter()
    with atomic_dir(root) as tmp:
        facts = make_facts(config)
        facts.save(tmp / "facts.jsonl")
        tokenizer = build_tokenizer(_texts(facts))
        training = {"original": facts.forget + facts.retain + facts.holdout,
                    "oracle": facts.retain + facts.holdout}
        if log:
            log(f"training original ({len(training['original'])} facts) and oracle "
                f"({len(training['oracle'])} facts) until loss < {config.train.target_loss:g} "
                f"(at most {config.train.epochs} epochs)")
        infos = train_many([dict(tokenizer=tokenizer, pairs=_pairs(train), cfg=config.train,
                                 seed=config.seed, out=tmp / what, name=what, progress=progress)
                            for what, train in training.items()], workers=workers)
        done = dict(zip(training, infos, strict=True))
        for what in training:  # `load_subject` reads this into `Subject.meta`
            meta = {"name": f"toyworld-{what}", "toyworld": {
                "role": what, "config_hash": config.hash(), "seed": config.seed,
                "trained_on": ["forget", "retain", "holdout"] if what == "original"
                else ["retain", "holdout"]}}
            (tmp / what / "workbench_subject.json").write_text(json.dumps(meta, indent=2))
        timings = {what: round(info["seconds"], 2) for what, info in done.items()}
        cpu = {what: round(info["cpu_seconds"], 2) for what, info in done.items()}
        t_train = time.perf_counter() - t0
        accuracy = {what: split_accuracies(tmp / what, facts) for what in training}
        stats = {
            "config": config.to_json(), "config_hash": config.hash(), "seed": config.seed,
            "n_people": {s: len({f.entity for f in facts.split(s)}) for s in facts.splits()},
            "n_facts": {s: len(facts.split(s)) for s in facts.splits()},
            "attributes": {rel: list(v) for rel, (v, _) in ATTRIBUTES.items()},
            "name": "toyworld", "kind": "toy",
            "chance": chance_rates(), "accuracy": accuracy, "train_seconds": timings,
            "final_loss": {what: round(info["final_loss"], 5) for what, info in done.items()},
            "epochs_trained": {what: info["epochs"] for what, info in done.items()},
            "train_cpu_seconds": cpu, "train_wall_seconds": round(t_train, 2),
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "world.json").write_text(json.dumps(stats, indent=2))
    if log:
        log(f"built in {stats['build_seconds']:.1f} s at {root}")
    return ToyWorld.at(root)


def oracle_variants(world: World, variants: list[dict[str, Any]], progress: bool = False,
                    workers: int | None = None) -> list[Path]:
    """More retrain oracles of a built toy world, each trained on retain + holdout with the
    world's recipe changed by a variant (`{"seed": 7}`, `{"target_loss": 1e-2}`): removers by
    construction for the verdict's known-truth pools. Cached under `<world>/oracles/<variant>`,
    built in parallel and atomically; an existing one is reused."""
    import dataclasses

    from workbench.models import load_subject
    from workbench.toyworld_train import train_many

    stats = world.stats["config"]
    base = TrainConfig(**stats["train"])
    facts = world.facts()
    outs, jobs = [], []
    tokenizer = None
    for v in variants:
        unknown = set(v) - {"seed"} - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise WorkbenchError(f"unknown oracle variant key(s) {sorted(unknown)}")
        tag = "-".join(f"{k}{v[k]:g}" for k in sorted(v))
        out = world.root / "oracles" / tag
        outs.append(out)
        if (out / "config.json").exists():
            continue
        if tokenizer is None:
            tokenizer = load_subject(str(world.original_dir), device="cpu").tokenizer
        cfg = dataclasses.replace(base, **{k: x for k, x in v.items() if k != "seed"})
        jobs.append(dict(tokenizer=tokenizer, pairs=_pairs(facts.retain + facts.holdout), cfg=cfg,
                         seed=int(v.get("seed", stats["seed"])), out=out, name=f"oracle-{tag}",
                         progress=progress))
    if jobs:
        with world_lock(world.root / ".oracles.lock", progress):
            todo = [j for j in jobs if not (j["out"] / "config.json").exists()]
            train_many(todo, workers=workers, fn=_train_atomically)
    return outs


def _train_atomically(out: Path, **job: Any) -> dict[str, Any]:
    from workbench.toyworld_train import train_and_save

    with atomic_dir(out) as tmp:
        info = train_and_save(out=tmp, **job)
        (tmp / "workbench_subject.json").write_text(json.dumps(
            {"name": f"toyworld-{job['name']}", "toyworld": {"role": "oracle-variant"}}, indent=2))
    return info
