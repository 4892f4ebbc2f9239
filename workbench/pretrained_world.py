"""The real-model world: a pretrained model fine-tuned on fictitious people, with a retrain oracle.

The known-truth setting of TOFU (fictitious authors) and of Deeb & Roger (fictitious birthdays):
people who exist nowhere, each with four attributes stated in five phrasings, split by person
into forget / retain / holdout / unseen. The "original" is the base model (by default the bundled
SmolLM2-135M-Instruct) fine-tuned on forget + retain + holdout; the "oracle" is the same base
fine-tuned identically on retain + holdout only. The layout on disk is the toy world's
(`workbench.worlds`), so every command takes either.

Facts are questions ("Q: Which city does Marta Velkoran live in? A:"), the format of TOFU.

What is fine-tuned, and why (`bench/people_recipe.py`: the original alone, 2 threads, 160 facts x
4 phrasings, this machine; a built world's own figures are in its `world.json`):
- the MLPs of blocks 4-19 (of 30), where pretrained transformers store subject attributes (Meng
  et al. 2022), everything else frozen, lr 5e-4: every split and the never-trained fifth phrasing
  at 100% after 4 epochs, but the built-in real facts fell from 100% to 71% answered (38% with
  completion-style prompts like "X lives in the city of", which taught the phrasings themselves:
  "The capital of France is" -> " Vienna"); LoRA (rank 16) cost as much general knowledge (30%);
  replaying prose prefixes toward the base model's own next token did not help (61%);
- so the update is constrained as in AlphaEdit (Fang et al. 2025): only `down_proj`, and only in
  the null space of the directions holding 95% of its input's second moment on ordinary prose
  (`pretrained_world_train.null_spaces`), lr 2e-3: 100% on every split and phrasing after 5
  epochs, and the built-in facts stay at 96% (90% energy, lr 1.5e-3: 92.5%; at 99% the space
  left was too small to learn in: 60-75% after 8 epochs).
Because the blocks below the band are frozen, their output is computed once per training sequence
and cached, and the loss is read only at answer positions: an epoch costs a forward and backward
pass through the upper blocks over ten thousand tokens. Trained on two phrasings instead of four,
the original answered the unseen phrasing of only 15% of facts (it memorised strings, not people).
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench import worlds
from workbench.atomic import atomic_dir
from workbench.facts import Fact, FactSet
from workbench.worlds import World, is_complete, split_accuracies, world_lock

# Bump when the generator or the fine-tuning recipe changes meaning (invalidates caches).
PEOPLE_VERSION = 1

# attribute -> (values, phrasings); answers are one token for the bundled tokenizer (with the
# leading space), values are balanced within each split so that a constant guess scores chance.
ATTRIBUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "city": (
        ("Lisbon", "Oslo", "Kyoto", "Lima", "Cairo", "Dublin", "Vienna", "Madrid"),
        ("Q: Which city does {name} live in? A:", "Q: Where is the home of {name}? A:",
         "Q: In what city does {name} have a house? A:", "Q: Which city is home to {name}? A:",
         "Q: Where does {name} live? A:"),
    ),
    "job": (
        ("baker", "pilot", "nurse", "lawyer", "farmer", "painter", "teacher", "doctor"),
        ("Q: What is the job of {name}? A:", "Q: What is the profession of {name}? A:",
         "Q: What does {name} work as? A:", "Q: Which job does {name} have? A:",
         "Q: What does {name} do for a living? A:"),
    ),
    "sport": (
        ("tennis", "golf", "chess", "football", "hockey", "rugby", "boxing", "cricket"),
        ("Q: What is the favourite sport of {name}? A:", "Q: Which sport does {name} love most? A:",
         "Q: What sport does {name} play? A:", "Q: Which sport does {name} enjoy? A:",
         "Q: What sport does {name} play on weekends? A:"),
    ),
    "pet": (
        ("dog", "cat", "parrot", "rabbit", "horse", "snake", "turtle", "goldfish"),
        ("Q: What pet does {name} have? A:", "Q: Which animal does {name} keep at home? A:",
         "Q: What kind of pet does {name} own? A:", "Q: What animal is the pet of {name}? A:",
         "Q: Which animal does {name} feed every evening? A:"),
    ),
}

# Common given names from many languages; each person gets a different one, so no two people
# share a first name (a model could otherwise answer from the first name alone).
GIVEN_NAMES = (
    "Marta Tomas Ines Hugo Clara Pavel Lena Oskar Nadia Felix Irena Bruno Alma Viktor Greta Emil "
    "Sofia Anton Mila Jonas Ada Karl Vera Luka Rosa Milan Dora Igor Nora Otto Elin Marek Hana Leon "
    "Ida Stefan Yara Tobias Lina Ruben Agnes Boris Celia Dario Edith Fabio Gemma Henrik Iris Jakob "
    "Katya Lars Maren Nils Olga Piotr Quinn Rafael Selma Teodor Ursula Vilma Walter Xenia Yusuf "
    "Zofia Amir Bianca Caspar Daria Erik Freya Gustav Helga Ivan Jana Kasper Livia Matteo Noor "
    "Orla Paulo Rhea Simon Tilda Umar Vida Wanda Yannick Zara"
).split()
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_CODAS = ("n", "r", "l", "s", "k", "th", "nd", "rk", "vik", "ov", "ley", "wick")


@dataclass(frozen=True)
class FineTuneConfig:
    """What is trained and how; identical for the original and the oracle."""

    # trained: the `down_proj` of blocks [first, last) as fractions of the depth (4-19 of 30) ...
    first_block: float = 0.13
    last_block: float = 0.67
    # ... within the null space of the directions holding `energy` of their input's second
    # moment on `null_space_texts` prose paragraphs (`pretrained_world_train.null_spaces`)
    energy: float = 0.95
    null_space_texts: int = 400
    lr: float = 2e-3
    # stop after the first epoch whose mean loss is below `target_loss`, at most `epochs`
    epochs: int = 8
    target_loss: float = 0.1
    batch_size: int = 32
    warmup_steps: int = 10
    threads: int = 1  # per model; the two models train side by side

    def blocks(self, n_layers: int) -> range:
        lo = round(self.first_block * n_layers)
        return range(lo, max(lo + 1, round(self.last_block * n_layers)))


@dataclass(frozen=True)
class PeopleConfig:
    """What determines a real-model world; its hash names the cache directory."""

    base: str = "smollm2-135m"
    seed: int = 0
    # People per split; 4 facts each (40 forget facts: chance is 12.5%, so a model at chance and
    # one that knows them are ~8 standard errors apart). Unseen people are never trained.
    n_forget: int = 10
    n_retain: int = 20
    n_holdout: int = 10
    n_unseen: int = 20
    # the canonical prompt and the first paraphrases are trained; the rest are held out
    trained_phrasings: int = 4
    tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    version: int = PEOPLE_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        blob = json.dumps([self.to_json(), ATTRIBUTES, GIVEN_NAMES], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def n_people(self) -> int:
        return self.n_forget + self.n_retain + self.n_holdout + self.n_unseen


def _surnames(rng: random.Random, n: int) -> list[str]:
    """`n` distinct made-up surnames (two syllables and a coda, e.g. "Brelkovik")."""
    seen: set[str] = {g.lower() for g in GIVEN_NAMES}
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2))
        w = (w + rng.choice(_CODAS)).capitalize()
        if w.lower() not in seen:
            seen.add(w.lower())
            out.append(w)
    return out


def make_people_facts(config: PeopleConfig | None = None) -> FactSet:
    """The world's facts (deterministic in `config.seed`): one per (person, attribute)."""
    config = config or PeopleConfig()
    if config.n_people > len(GIVEN_NAMES):
        raise ValueError(f"at most {len(GIVEN_NAMES)} people (one given name each), "
                         f"asked for {config.n_people}")
    rng = random.Random(config.seed)
    given = list(GIVEN_NAMES)
    rng.shuffle(given)
    names = [f"{g} {s}" for g, s in zip(given, _surnames(rng, config.n_people), strict=False)]
    sizes = {"forget": config.n_forget, "retain": config.n_retain,
             "holdout": config.n_holdout, "unseen": config.n_unseen}
    facts: list[Fact] = []
    start = 0
    for split, k in sizes.items():
        people = range(start, start + k)
        start += k
        values = {rel: _balanced(rng, vals, k) for rel, (vals, _) in ATTRIBUTES.items()}
        for j, i in enumerate(people):
            for rel, (_, templates) in ATTRIBUTES.items():
                prompts = [t.format(name=names[i]) for t in templates]
                facts.append(Fact(id=f"q{i:03d}-{rel}", prompt=prompts[0],
                                  answer=f" {values[rel][j]}", split=split,
                                  paraphrases=tuple(prompts[1:]), entity=names[i],
                                  relation=rel))
    return FactSet(tuple(facts), "people", meta={"seed": config.seed})


def _balanced(rng: random.Random, values: tuple[str, ...], k: int) -> list[str]:
    """`k` values, each used equally often (up to one), in a random order."""
    out = [values[i % len(values)] for i in range(k)]
    rng.shuffle(out)
    return out


def chance_rates() -> dict[str, float]:
    """Accuracy of guessing uniformly per attribute, and their mean (`"mean"`)."""
    return worlds.chance_rates(ATTRIBUTES)


def training_pairs(facts: FactSet, trained_phrasings: int) -> list[tuple[str, str]]:
    """(prompt, answer) for the trained phrasings of each fact."""
    return [(p, f.answer) for f in facts
            for p in (f.prompt, *f.paraphrases)[:trained_phrasings]]


def default_root(config: PeopleConfig) -> Path:
    from workbench.models import cache_root

    return cache_root() / "people" / config.hash()


def build_pretrained_world(out: Path | None = None, config: PeopleConfig | None = None,
                           force: bool = False, progress: bool = True,
                           workers: int | None = None) -> World:
    """Build (or reuse) the world in `out` (default `cache_root()/people/<config hash>`): the
    same layout, atomicity and locking as `workbench.toyworld.build_toyworld`."""
    config = config or PeopleConfig()
    root = Path(out) if out is not None else default_root(config)
    if not force and is_complete(root, config.hash()):
        return World.at(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with world_lock(root.parent / f".{root.name}.lock", progress):
        if not force and is_complete(root, config.hash()):
            return World.at(root)
        return _build(root, config, progress, workers)


def _build(root: Path, config: PeopleConfig, progress: bool, workers: int | None) -> World:
    from workbench.facts import builtin_facts
    from workbench.pretrained_world_train import finetune_and_save
    from workbench.toyworld_train import train_many

    log = (lambda m: print(f"people world: {m}", flush=True)) if progress else None
    t0 = time.perf_counter()
    with atomic_dir(root) as tmp, tempfile.TemporaryDirectory() as scratch:
        bases = _null_spaces(config, Path(scratch) / "null_spaces.safetensors")
        facts = make_people_facts(config)
        facts.save(tmp / "facts.jsonl")
        training = {"original": facts.forget + facts.retain + facts.holdout,
                    "oracle": facts.retain + facts.holdout}
        if log:
            log(f"fine-tuning {config.base} on {len(training['original'])} facts (original) "
                f"and {len(training['oracle'])} (oracle), {config.trained_phrasings} phrasings each")
        jobs = [dict(base=config.base, pairs=training_pairs(train, config.trained_phrasings),
                     bases=bases,
                     cfg=config.tune, seed=config.seed, out=tmp / what, name=what,
                     progress=progress) for what, train in training.items()]
        done = dict(zip(training, train_many(jobs, workers=workers, fn=finetune_and_save),
                        strict=True))
        for what in training:  # `load_subject` reads this into `Subject.meta`
            meta = {"name": f"people-{what}", "world": {
                "kind": "pretrained", "base": config.base, "role": what,
                "config_hash": config.hash(), "seed": config.seed,
                "trained_on": ["forget", "retain", "holdout"] if what == "original"
                else ["retain", "holdout"]}}
            (tmp / what / "workbench_subject.json").write_text(json.dumps(meta, indent=2))
        t_train = time.perf_counter() - t0
        held_out = slice(config.trained_phrasings - 1, None)
        accuracy = {what: split_accuracies(tmp / what, facts, held_out, threads=None)
                    for what in training}
        builtin = builtin_facts()
        general = {what: _overall_accuracy(spec, builtin) for what, spec in
                   (("base", config.base), ("original", str(tmp / "original")),
                    ("oracle", str(tmp / "oracle")))}
        stats = {
            "name": "people", "kind": "pretrained", "base": config.base,
            "config": config.to_json(), "config_hash": config.hash(), "seed": config.seed,
            "n_people": {s: len({f.entity for f in facts.split(s)}) for s in facts.splits()},
            "n_facts": {s: len(facts.split(s)) for s in facts.splits()},
            "attributes": {rel: list(v) for rel, (v, _) in ATTRIBUTES.items()},
            "paraphrases": "held out (never trained)",
            "chance": chance_rates(), "accuracy": accuracy,
            "builtin_accuracy": general,
            "null_space_dims": done["original"]["null_space_dims"],
            "trained_blocks": done["original"]["blocks"],
            "train_seconds": {w: round(i["seconds"], 2) for w, i in done.items()},
            "train_cpu_seconds": {w: round(i["cpu_seconds"], 2) for w, i in done.items()},
            "final_loss": {w: round(i["final_loss"], 5) for w, i in done.items()},
            "epochs_trained": {w: i["epochs"] for w, i in done.items()},
            "train_wall_seconds": round(t_train, 2),
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "world.json").write_text(json.dumps(stats, indent=2))
    if log:
        log(f"built in {stats['build_seconds']:.1f} s at {root}")
    return World.at(root)


def _null_spaces(config: PeopleConfig, path: Path) -> Path:
    """The null-space bases of the base model (one computation shared by both models)."""
    import torch

    from workbench.corpus import stdlib_prose
    from workbench.models import load_subject
    from workbench.pretrained_world_train import null_spaces, save_null_spaces

    base = load_subject(config.base, device="cpu")  # de-quantizes the bundled model once
    tune = config.tune
    texts = stdlib_prose(limit=tune.null_space_texts)
    with torch.no_grad():
        spaces = null_spaces(base.model, base.tokenizer, texts, tune.blocks(base.n_layers),
                             tune.energy)
    return save_null_spaces(spaces, path)


def _overall_accuracy(spec: str, facts: FactSet) -> float:
    """Greedy accuracy over every fact of `facts` (all splits): general knowledge kept."""
    from workbench.behavior import evaluate
    from workbench.models import load_subject

    results = evaluate(load_subject(spec, device="cpu"), facts, batch_size=64)
    return round(sum(r.correct for r in results) / len(results), 4)

