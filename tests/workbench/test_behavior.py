"""Behaviour: answer matching, greedy correctness of the built-in facts, log-probs, batching."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.behavior import (
    answer_logprobs,
    evaluate,
    greedy_continuations,
    greedy_correct,
    is_match,
    normalize,
    summarize,
)
from workbench.facts import Fact, FactSet, builtin_facts


# ----- matching -------------------------------------------------------------------------------
def test_normalize():
    assert normalize("  Café,   CRÈME-brûlée! ") == "cafe creme brulee"
    assert normalize("São Paulo") == "sao paulo"
    assert normalize("...") == ""


@pytest.mark.parametrize(("generated", "answer"), [
    (" Paris", " Paris"),
    (" paris.", " Paris"),
    (" PARIS, the city of light", " Paris"),
    ("Paris\n\nThe capital", " Paris"),
    (" Bogotá is", " Bogota"),
    (" J. K. Rowling wrote", " J.K. Rowling"),
    (" Buenos Aires.", " Buenos Aires"),
])
def test_is_match_accepts(generated, answer):
    assert is_match(generated, answer)


@pytest.mark.parametrize(("generated", "answer"), [
    (" Parisian", " Paris"),  # word boundary
    (" Parish", " Paris"),
    (" The capital is Paris", " Paris"),  # must be a prefix, not anywhere
    (" Buenos", " Buenos Aires"),  # a partial answer is not the answer
    ("", " Paris"),
    (" anything", " ..."),  # an answer that normalises to nothing never matches
])
def test_is_match_rejects(generated, answer):
    assert not is_match(generated, answer)


# ----- the bundled model on the built-in set --------------------------------------------------
@pytest.fixture(scope="module")
def builtin():
    return builtin_facts("smollm2")


@pytest.fixture(scope="module")
def greedy_results(bundled, builtin):
    return evaluate(bundled, builtin, batch_size=16)


def test_every_builtin_fact_is_answered_correctly(greedy_results):
    wrong = [(r.id, r.prompt, r.generated) for r in greedy_results if not r.correct]
    assert not wrong, f"{len(wrong)} built-in facts answered wrongly: {wrong[:5]}"
    # correctness comes from the greedy text itself, not only from the teacher-forced fallback
    assert all(is_match(r.generated, r.answer) for r in greedy_results)


def test_logprobs_finite_and_negative(greedy_results):
    total = np.array([r.logprob for r in greedy_results])
    first = np.array([r.first_logprob for r in greedy_results])
    assert np.isfinite(total).all() and np.isfinite(first).all()
    assert (total < 0).all() and (first < 0).all()
    assert (total <= first + 1e-5).all()  # adding more answer tokens can only lower the sum


def test_teacher_forced_agrees_with_greedy(bundled, builtin, greedy_results):
    forced = evaluate(bundled, builtin, batch_size=16, generate=False)
    assert [r.id for r in forced] == [r.id for r in greedy_results]
    assert [r.correct for r in forced] == [is_match(r.generated, r.answer)
                                           for r in greedy_results]
    np.testing.assert_allclose([r.logprob for r in forced], [r.logprob for r in greedy_results],
                               atol=1e-5)


def test_greedy_correct_generates_only_the_misses(bundled, builtin, monkeypatch):
    import workbench.behavior as behavior

    facts = [f for f in builtin if f.relation == builtin[0].relation][:6]
    # half the rows carry another fact's answer: teacher forcing misses them
    rows = [(f.prompt, f.answer if i % 2 else facts[(i + 1) % len(facts)].answer)
            for i, f in enumerate(facts)]
    prompts, answers = [p for p, _ in rows], [a for _, a in rows]
    exact = answer_logprobs(bundled, prompts, answers)[2]
    ref = evaluate(bundled, FactSet(tuple(Fact(f"r{i}", p, a, "forget")
                                          for i, (p, a) in enumerate(rows)), "rows"))
    asked = []
    real = behavior.greedy_continuations
    monkeypatch.setattr(behavior, "greedy_continuations",
                        lambda s, ps, *a, **k: asked.extend(ps) or real(s, ps, *a, **k))
    got = greedy_correct(bundled, prompts, answers, exact)
    assert got.tolist() == [r.correct for r in ref]
    assert 0 < len(asked) < len(rows) and sorted(asked) == sorted(
        p for p, e in zip(prompts, exact, strict=True) if not e)


def test_wrong_answers_are_rejected(bundled, builtin):
    """Swap answers within a relation: the model must not be credited for the wrong answer."""
    facts = [f for f in builtin if f.relation == builtin[0].relation][:6]
    shifted = [Fact(f.id, f.prompt, g.answer, f.split)
               for f, g in zip(facts, facts[1:] + facts[:1], strict=True) if g.answer != f.answer]
    results = evaluate(bundled, FactSet(tuple(shifted), "shifted"), batch_size=8)
    assert len(results) >= 3 and not any(r.correct for r in results)


def test_batching_does_not_change_logprobs(bundled, builtin):
    facts = builtin.facts[::2]  # half the set keeps batch_size=1 quick; lengths still mixed
    prompts = [f.prompt for f in facts]
    answers = [f.answer for f in facts]
    assert len({len(a) for a in answers}) > 1
    one = answer_logprobs(bundled, prompts, answers, batch_size=1)
    many = answer_logprobs(bundled, prompts, answers, batch_size=16)
    np.testing.assert_allclose(one[0], many[0], atol=1e-4)
    np.testing.assert_allclose(one[1], many[1], atol=1e-4)
    assert (one[2] == many[2]).all()


def test_batching_does_not_change_generation(bundled, builtin):
    """Left-padded batched generation equals one-at-a-time generation (prompts of mixed length)."""
    facts = sorted(builtin, key=lambda f: len(f.prompt))
    prompts = [f.prompt for f in facts[:: max(1, len(facts) // 10)]]
    assert len({len(bundled.tokenizer(p)["input_ids"]) for p in prompts}) > 1
    assert greedy_continuations(bundled, prompts, 4, batch_size=1) == \
        greedy_continuations(bundled, prompts, 4, batch_size=16)


def test_summarize_per_split(greedy_results, builtin):
    summary = summarize(greedy_results)
    assert list(summary) == ["forget", "retain", "holdout"]
    assert sum(row["n"] for row in summary.values()) == len(builtin)
    for split, row in summary.items():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["accuracy"] == 1.0
        assert np.isfinite(row["logprob"]) and row["logprob"] < 0
        assert row["n"] == len(builtin.split(split))


def test_summarize_counts_wrong_answers():
    from workbench.behavior import FactResult

    rows = [FactResult(str(i), s, "p", " a", "g", c, -1.0 * (i + 1), -1.0)
            for i, (s, c) in enumerate([("forget", True), ("forget", False), ("retain", False)])]
    summary = summarize(rows)
    assert summary["forget"] == {"accuracy": 0.5, "logprob": -1.5, "n": 2}
    assert summary["retain"]["accuracy"] == 0.0
    assert "holdout" not in summary


def test_paraphrase_rows(bundled, builtin):
    part = builtin.take(6)
    results = evaluate(bundled, part, batch_size=16, use_paraphrases=True)
    assert len(results) == sum(len(f.paraphrases) for f in part)
    assert {r.prompt for r in results} == {p for f in part for p in f.paraphrases}


def test_random_model_knows_nothing(tiny, builtin):
    results = evaluate(tiny, builtin, batch_size=32)
    assert np.mean([r.correct for r in results]) <= 0.05
    assert all(np.isfinite(r.logprob) for r in results)
