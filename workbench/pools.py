"""Known-truth pools: control edits whose answer to "removed or suppressed?" holds by construction.

The verdict is fitted on one world seed's pool and judged on pools it never saw. Each `Control`
names its truth and how to build it from a world (`PoolInputs`); `check_validity` drops a control
that does not behave as its truth demands (a suppressor must forget about as well as the oracle
and keep retain; a non-unlearned edit must still answer; a damaged one must have lost retain), so
no invalid control is ever scored. Kinds (each at two or more strengths or seeds):

- suppressed: an output hook on the logits, the output head alone fine-tuned (NPO), the final
  norm alone fine-tuned, the forget names' input-embedding rows cut (zeroed or averaged), the last block alone fine-tuned (NPO), the last two blocks taught to
  refuse, an additive steering hook after a middle block, a gated detector that steers only
  inputs it flags, an SAE clamp spliced with its error term, weights moved only inside their
  4-bit rounding cells (the toy world), and (empirical, counted only where
  relearning confirms it) M0 distilled to imitate the oracle's outputs (Lee et al. 2025);
- removed: the retrain oracle, oracles retrained with other seeds and a shorter recipe, the
  oracle taught wrong answers about the forget people, the oracle taught other people;
- not_unlearned: the identity, M0 fine-tuned further on retain facts;
- damaged: heavy weight noise, gradient ascent on every weight run to collapse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.worlds import World

TRUTHS = ("removed", "suppressed", "not_unlearned", "damaged")
# A suppressor (or remover) must forget about as well as the oracle and keep retain (issue #15).
FORGET_OVER_ORACLE = 0.15
RETAIN_DROP = 0.10
# A damaged control must have lost clearly more retain than a valid edit may.
DAMAGE_DROP = 0.20


@dataclass
class PoolInputs:
    """What control builders read: the world, its facts, M0 and the oracle (loaded once)."""

    world: World
    facts: FactSet
    m0: Subject
    oracle: Subject
    seed: int = 0

    @property
    def mid(self) -> int:
        return self.m0.n_layers // 2


@dataclass(frozen=True)
class Control:
    """One control edit: `build(inputs) -> Subject`, its truth and a one-line description."""

    name: str
    kind: str
    truth: str
    what: str
    build: Callable[[PoolInputs], Subject]
    empirical: bool = False  # counted only where relearning confirms the truth

    def __post_init__(self) -> None:
        if self.truth not in TRUTHS:
            raise WorkbenchError(f"control {self.name}: truth must be one of {TRUTHS}")


def _op(name: str, overrides: dict[str, Any], seed: int = 0) -> Callable[[PoolInputs], Subject]:
    def build(p: PoolInputs) -> Subject:
        from workbench.operators import get_operator, make_config

        edit = get_operator(name).apply(p.m0, p.facts.forget, p.facts.retain,
                                        make_config(name, dict(overrides), seed=seed))
        return edit.subject

    return build


def _variant(variant: dict[str, Any]) -> Callable[[PoolInputs], Subject]:
    def build(p: PoolInputs) -> Subject:
        from workbench.models import load_subject
        from workbench.toyworld import oracle_variants

        (path,) = oracle_variants(p.world, [variant])
        return load_subject(str(path), device=p.m0.device)

    return build


def _head_npo(seed: int, **overrides: Any) -> Callable[[PoolInputs], Subject]:
    def build(p: PoolInputs) -> Subject:
        from workbench.controls import untied
        from workbench.operators import get_operator, make_config

        config = make_config("npo", {"params": "head", "positions": "all", "preserve": 0.0,
                                     "rows": "none", "lr": 1e-2, "steps": 300} | overrides,
                             seed=seed)
        return get_operator("npo").apply(untied(p.m0), p.facts.forget, p.facts.retain,
                                         config).subject

    return build


def _tuned(start: str, learn: Callable[[PoolInputs], FactSet], overrides: dict[str, Any],
           name: str, loss: str = "nll", seed: int = 0) -> Callable[[PoolInputs], Subject]:
    def build(p: PoolInputs) -> Subject:
        from workbench.controls import fine_tune

        base = p.m0 if start == "m0" else p.oracle
        return fine_tune(base, p.facts.forget, learn(p), overrides, loss=loss,
                     reference=p.oracle if loss == "kl" else None, name=name, seed=seed)

    return build


def _refusal(p: PoolInputs) -> FactSet:
    from workbench.controls import refusal_answer, relabelled

    answer = refusal_answer(p.m0.tokenizer)
    return relabelled(p.facts.forget, lambda _f: answer, "refuse") + p.facts.retain


def _wrong(p: PoolInputs) -> FactSet:
    from workbench.controls import wrong_answers

    return wrong_answers(p.facts.forget, p.facts.retain, seed=p.seed) + p.facts.retain


def _other_people(p: PoolInputs) -> FactSet:
    from workbench.controls import relabelled

    unseen = p.facts.split("unseen")
    people = sorted({f.entity for f in unseen if f.entity})[: max(1, len(unseen) // 8)]
    taught = FactSet(tuple(f for f in unseen if f.entity in people), "other-people")
    return relabelled(taught, lambda f: f.answer, "taught") + p.facts.retain


def _output_hooks() -> list[Control]:
    from workbench.controls import output_only_suppressor

    return [Control(f"output_hook_{k}", "output_hook", "suppressed", "logits pushed down by a hook",
                    lambda p, k=k: output_only_suppressor(p.m0, p.facts.forget, float(k)))
            for k in (100, 30)]


def _name_cuts() -> list[Control]:
    from workbench.controls import name_cut_suppressor

    return [Control(f"name_cut_{mode}", "name_cut", "suppressed",
                    "the forget names' input-embedding rows cut",
                    lambda p, mode=mode: name_cut_suppressor(
                        p.m0, p.facts.forget, p.facts.retain + p.facts.holdout
                        + p.facts.split("unseen"), mode))
            for mode in ("zero", "mean")]


def _noise(seed: int) -> list[Control]:
    from workbench.controls import noise_edit

    return [Control(f"noise_{scale:g}", "noise", "damaged", "heavy Gaussian weight noise",
                    lambda p, scale=scale, k=k: noise_edit(p.m0, scale, seed=seed + k))
            for k, scale in enumerate((3.0, 2.0))]


def toy_controls(seed: int = 0) -> list[Control]:
    """The toy world's pool (33 controls before validity checks)."""
    from workbench import controls as c

    s = seed
    late = lambda n, k: lambda p: c.late_blocks_suppressor(p.m0, p.facts.forget,  # noqa: E731
                                                           p.facts.retain, blocks=n, seed=k)
    out = [
        *_output_hooks(),
        Control("head_npo_0", "head_tune", "suppressed", "only the output head fine-tuned",
                _head_npo(s)),
        Control("head_npo_1", "head_tune", "suppressed", "only the output head fine-tuned",
                _head_npo(s + 1, lr=3e-2, steps=600, retain_weight=3.0)),
        Control("norm_npo", "norm_tune", "suppressed", "only the final norm fine-tuned",
                _op("npo", {"params": "norm", "positions": "all", "preserve": 0.0,
                            "rows": "none", "lr": 3e-2, "steps": 300}, seed=s)),
        *_name_cuts(),
        Control("last_block_npo_0", "last_block", "suppressed", "only the last block fine-tuned",
                late(1, s)),
        Control("last_block_npo_1", "last_block", "suppressed", "only the last block fine-tuned",
                late(1, s + 1)),
        Control("last2_refusal_0", "last2_refusal", "suppressed",
                "last two blocks taught to refuse",
                lambda p: _tuned("m0", _refusal, {"params": "block", "lr": 3e-3, "steps": 800,
                                                  "layers": (p.m0.n_layers - 2,
                                                             p.m0.n_layers - 1)},
                                 "last2-refusal", seed=s)(p)),
        Control("last2_refusal_1", "last2_refusal", "suppressed",
                "last two blocks taught to refuse",
                lambda p: _tuned("m0", _refusal, {"params": "block", "lr": 1e-3, "steps": 800,
                                                  "layers": (p.m0.n_layers - 2,
                                                             p.m0.n_layers - 1)},
                                 "last2-refusal", seed=s + 1)(p)),
        Control("steer_mid_12", "steer_mid", "suppressed", "steering hook after a middle block",
                lambda p: _op("steer", {"layers": (p.mid,)}, seed=s)(p)),
        Control("steer_mid_6", "steer_mid", "suppressed", "steering hook after a middle block",
                lambda p: _op("steer", {"layers": (p.mid,), "coef": 6.0}, seed=s)(p)),
        Control("gated_detector_1", "gated_detector", "suppressed",
                "a forget-entity detector on block 1 gates a later steering hook",
                lambda p: _op("steer", {"layers": (p.mid,), "gate_layer": 1}, seed=s)(p)),
        Control("gated_detector_0", "gated_detector", "suppressed",
                "a forget-entity detector on block 0 gates a later steering hook",
                lambda p: _op("steer", {"layers": (p.mid,), "gate_layer": 0}, seed=s)(p)),
        Control("sae_clamp", "sae_clamp", "suppressed", "SAE features clamped, error term kept",
                _op("sae_clamp", {}, seed=s)),
        # cells of 64 columns: wide enough to forget in a few steps (of 32, too narrow on the
        # toy model), and still mapped back by the attack's groups of 32; of 128 they are not
        *(Control(f"in_cell_g64_{k}", "in_cell", "suppressed",
                  "weights moved inside their 4-bit rounding cells",
                  lambda p, k=k: c.in_cell_suppressor(
                      p.m0, p.facts.forget, p.facts.retain, group_size=64,
                      steps=(40, 60)[k], rate=(0.2, 0.3)[k]))
          for k in (0, 1)),
        *(Control(f"distilled_{k}", "distilled", "suppressed",
                  "M0 distilled toward the oracle's outputs",
                  lambda p, k=k: _tuned("m0", lambda p: p.facts.forget + p.facts.retain,
                                        {"params": "block", "lr": (3e-3, 1e-3)[k], "steps": 600,
                                         "layers": tuple(range(p.m0.n_layers)),
                                         "stop_forget_acc": None},
                                        "distilled", loss="kl", seed=s + k)(p), empirical=True)
          for k in (0, 1)),
        Control("oracle", "oracle", "removed", "the retrain oracle", lambda p: p.oracle),
        Control("oracle_seed_a", "oracle_seed", "removed", "an oracle retrained with another seed",
                _variant({"seed": 1000 + s})),
        Control("oracle_seed_b", "oracle_seed", "removed", "an oracle retrained with another seed",
                _variant({"seed": 2000 + s})),
        Control("oracle_short", "oracle_short", "removed", "an oracle trained less long",
                _variant({"target_loss": 3e-2, "seed": 3000 + s})),
        Control("oracle_wrong_0", "oracle_wrong", "removed",
                "the oracle taught wrong answers about the forget people",
                _tuned("oracle", _wrong, {"params": "block", "lr": 1e-3, "steps": 60,
                                          "layers": None, "stop_forget_acc": None},
                       "wrong", seed=s)),
        Control("oracle_wrong_1", "oracle_wrong", "removed",
                "the oracle taught wrong answers about the forget people",
                _tuned("oracle", _wrong, {"params": "mlp", "lr": 3e-3, "steps": 60,
                                          "stop_forget_acc": None}, "wrong", seed=s + 1)),
        Control("oracle_other_people", "oracle_other_people", "removed",
                "the oracle taught other people", _tuned(
                    "oracle", _other_people, {"params": "mlp", "lr": 1e-3, "steps": 100,
                                              "stop_forget_acc": None}, "other-people", seed=s)),
        Control("identity", "identity", "not_unlearned", "the original weights",
                lambda p: c.identity_edit(p.m0)),
        Control("retain_tuned_40", "retain_tuned", "not_unlearned", "M0 tuned on retain facts",
                _tuned("m0", lambda p: p.facts.retain, {"params": "mlp", "lr": 1e-3,
                                                        "steps": 40, "stop_forget_acc": None},
                       "retain-tuned", seed=s)),
        Control("retain_tuned_150", "retain_tuned", "not_unlearned", "M0 tuned on retain facts",
                _tuned("m0", lambda p: p.facts.retain, {"params": "block", "lr": 1e-3,
                                                        "steps": 150, "stop_forget_acc": None},
                       "retain-tuned", seed=s + 1)),
        *_noise(s),
        Control("ga_collapse", "ga_collapse", "damaged", "gradient ascent on every weight",
                lambda p: _op("ga", {"params": "block", "layers": tuple(range(p.m0.n_layers)),
                                     "lr": 1e-3, "steps": 100, "stop_forget_acc": None,
                                     "positions": "all", "preserve": 0.0, "rows": "none"},
                              seed=s)(p)),
    ]
    return out


def people_controls(seed: int = 0) -> list[Control]:
    """The real-model world's pool (24 controls before validity checks): the toy pool's kinds
    that cost minutes on a 135M model, at learning rates for a pretrained model. Left out: the
    oracles retrained with other seeds or lengths (a retrain is the world build's cost again),
    the head- and norm-only tunes (never valid on the toy world either), the SAE clamp (needs a
    trained SAE) and the distillation (empirical: a relearning run per control to confirm it).
    In their place, the oracle fine-tuned further on retain facts: it never saw the forget
    people, so whatever it becomes, it cannot know them."""
    from workbench import controls as c

    s = seed
    last = lambda n, k: lambda p: c.late_blocks_suppressor(  # noqa: E731
        p.m0, p.facts.forget, p.facts.retain, blocks=n, seed=k)
    tail2 = lambda p: (p.m0.n_layers - 2, p.m0.n_layers - 1)  # noqa: E731
    every = lambda p: tuple(range(p.m0.n_layers))  # noqa: E731
    out = [
        *_output_hooks(),
        *_name_cuts(),
        *(Control(f"last_block_npo_{k}", "last_block", "suppressed",
                  "only the last block fine-tuned", last(1, s + k)) for k in (0, 1)),
        *(Control(f"last2_refusal_{k}", "last2_refusal", "suppressed",
                  "last two blocks taught to refuse",
                  lambda p, k=k: _tuned("m0", _refusal, {"params": "block", "lr": (1e-3, 3e-4)[k],
                                                         "steps": 150, "layers": tail2(p)},
                                        "last2-refusal", seed=s + k)(p))
          for k in (0, 1)),
        *(Control(f"steer_mid_{coef:g}", "steer_mid", "suppressed",
                  "steering hook after a middle block",
                  lambda p, coef=coef: _op("steer", {"layers": (p.mid,), "coef": coef}, seed=s)(p))
          for coef in (12.0, 6.0)),
        *(Control(f"gated_detector_{g}", "gated_detector", "suppressed",
                  f"a forget-entity detector on block {g} gates a later steering hook",
                  lambda p, g=g: _op("steer", {"layers": (p.mid,), "gate_layer": g}, seed=s)(p))
          for g in (1, 2)),
        Control("oracle", "oracle", "removed", "the retrain oracle", lambda p: p.oracle),
        *(Control(f"oracle_wrong_{k}", "oracle_wrong", "removed",
                  "the oracle taught wrong answers about the forget people",
                  _tuned("oracle", _wrong, {"params": "mlp", "lr": (1e-3, 3e-4)[k], "steps": 60,
                                            "stop_forget_acc": None}, "wrong", seed=s + k))
          for k in (0, 1)),
        Control("oracle_other_people", "oracle_other_people", "removed",
                "the oracle taught other people", _tuned(
                    "oracle", _other_people, {"params": "mlp", "lr": 1e-3, "steps": 100,
                                              "stop_forget_acc": None}, "other-people", seed=s)),
        *(Control(f"oracle_retain_tuned_{k}", "oracle_retain_tuned", "removed",
                  "the oracle tuned further on retain facts",
                  _tuned("oracle", lambda p: p.facts.retain,
                         {"params": ("mlp", "block")[k], "lr": 1e-3, "steps": (40, 100)[k],
                          "stop_forget_acc": None}, "oracle-retain-tuned", seed=s + k))
          for k in (0, 1)),
        Control("identity", "identity", "not_unlearned", "the original weights",
                lambda p: c.identity_edit(p.m0)),
        *(Control(f"retain_tuned_{steps}", "retain_tuned", "not_unlearned",
                  "M0 tuned on retain facts",
                  _tuned("m0", lambda p: p.facts.retain, {"params": params, "lr": 1e-3,
                                                          "steps": steps,
                                                          "stop_forget_acc": None},
                         "retain-tuned", seed=s + k))
          for k, (params, steps) in enumerate((("mlp", 40), ("block", 100)))),
        *_noise(s),
        Control("ga_collapse", "ga_collapse", "damaged", "gradient ascent on every weight",
                lambda p: _op("ga", {"params": "block", "layers": every(p), "lr": 1e-3,
                                     "steps": 60, "stop_forget_acc": None, "positions": "all",
                                     "preserve": 0.0, "rows": "none"}, seed=s)(p)),
    ]
    return out


def world_controls(world: World, seed: int = 0) -> list[Control]:
    """The pool recipe for `world`'s kind: the toy world's or the real-model world's."""
    return people_controls(seed) if world.stats.get("kind") == "pretrained" else toy_controls(seed)


def behaviour(subject: Subject, facts: FactSet) -> dict[str, float]:
    """Greedy accuracy per split (what users see; what validity is judged on)."""
    from workbench.behavior import accuracy_by_split

    return {split: round(row["accuracy"], 4)
            for split, row in accuracy_by_split(subject, facts).items()}


def check_validity(truth: str, acc: dict[str, float], m0: dict[str, float],
                   oracle: dict[str, float]) -> str | None:
    """Why a control with `truth` and split accuracies `acc` is not a valid instance (None: it
    is), judged against M0's and the oracle's accuracies."""
    forget, retain = acc["forget"], acc["retain"]
    kept = retain >= m0["retain"] - RETAIN_DROP
    if truth in ("removed", "suppressed"):
        if forget > oracle["forget"] + FORGET_OVER_ORACLE:
            return (f"forget accuracy {forget:.0%} is over the oracle's {oracle['forget']:.0%} + "
                    f"{FORGET_OVER_ORACLE:.0%}: it did not forget")
        if not kept:
            return f"retain accuracy fell {m0['retain']:.0%} -> {retain:.0%}: it is damaged"
    elif truth == "not_unlearned":
        if forget < m0["forget"] - FORGET_OVER_ORACLE:
            return f"forget accuracy fell {m0['forget']:.0%} -> {forget:.0%}: it unlearned"
        if not kept:
            return f"retain accuracy fell {m0['retain']:.0%} -> {retain:.0%}: it is damaged"
    elif retain > m0["retain"] - DAMAGE_DROP:
        return f"retain accuracy {m0['retain']:.0%} -> {retain:.0%} is not damaged enough"
    return None
