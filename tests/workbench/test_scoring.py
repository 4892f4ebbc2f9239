"""`answer_scores` projects onto the vocabulary at answer positions only; it must agree with the
full forward pass everywhere: plain, hooked at the head, and with parameters swapped in."""

from __future__ import annotations

import copy

import torch
from conftest import make_tiny_subject, snapshot

from workbench.batching import encode
from workbench.facts import Fact, FactSet
from workbench.scoring import answer_scores

PROMPTS = ["The capital of France is", "A", "Alice was born in the city of", "One two"]
ANSWERS = [" Paris", " long answer with several tokens", " Lyon", " three four five"]


def _reference(model, b):
    """Full logits, full log-softmax: what every caller computed before."""
    with torch.no_grad():
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1]
    logp = logits.float().log_softmax(-1)
    target, mask = b.input_ids[:, 1:], b.answer_mask[:, :-1]
    tok = logp.gather(-1, target[..., None])[..., 0]
    total = (tok * mask).sum(1)
    first = tok[torch.arange(len(target)), b.last]
    exact = ((logits.argmax(-1) == target) | ~mask).all(1)
    return total, first, exact


def _same(scores, ref) -> None:
    total, first, exact = ref
    assert torch.allclose(scores.total, total, atol=1e-4)
    assert torch.allclose(scores.first, first, atol=1e-4)
    assert torch.equal(scores.exact, exact)


def test_answer_positions_only_equal_the_full_forward(tiny):
    b = encode(tiny.tokenizer, PROMPTS, ANSWERS)
    assert int(b.answer_mask.sum()) < b.answer_mask.numel() // 2  # most positions skipped
    _same(answer_scores(tiny.model, b), _reference(tiny.model, b))


def test_exact_is_true_only_when_greedy_decoding_gives_every_answer_token(tiny):
    b = encode(tiny.tokenizer, PROMPTS, ANSWERS)
    ids = b.input_ids.clone()
    with torch.no_grad():  # row 1's answer becomes the model's own greedy continuation
        for pos in range(int(b.answer_start[1]), int(b.lengths[1])):
            nxt = tiny.model(input_ids=ids[1:2, :pos]).logits[0, -1].argmax()
            ids[1, pos] = nxt
    greedy = type(b)(ids, b.attention_mask, b.last, b.answer_start, b.answer_mask, b.lengths)
    scores = answer_scores(tiny.model, greedy)
    _same(scores, _reference(tiny.model, greedy))
    assert bool(scores.exact[1])
    wrong = ids.clone()
    wrong[1, int(b.lengths[1]) - 1] = (ids[1, int(b.lengths[1]) - 1] + 1) % len(tiny.tokenizer)
    flipped = type(b)(wrong, b.attention_mask, b.last, b.answer_start, b.answer_mask, b.lengths)
    assert not bool(answer_scores(tiny.model, flipped).exact[1])


def test_a_head_hook_falls_back_to_the_full_forward(tiny):
    """An output-suppressor hooks the head and reads every position: its effect must show."""
    from workbench.controls import output_only_suppressor

    facts = FactSet((Fact("f1", "Alice was born in the city of", " Lyon", "forget",
                          entity="Alice"),), "t")
    edited = output_only_suppressor(tiny, facts, strength=50.0)
    b = encode(tiny.tokenizer, PROMPTS, ANSWERS)
    hooked = answer_scores(edited.model, b)
    _same(hooked, _reference(edited.model, b))
    plain = answer_scores(tiny.model, b)
    assert hooked.first[2] < plain.first[2] - 10  # the suppressed row
    assert torch.allclose(hooked.total[0], plain.total[0], atol=1e-4)  # untouched row


def test_swapped_parameters_score_like_a_model_holding_them(tiny):
    """`params` scores as a copy with those weights would, and leaves the model unchanged."""
    other = make_tiny_subject(tiny.tokenizer, seed=1)
    name = "model.layers.1.mlp.down_proj.weight"
    params = {name: dict(other.model.named_parameters())[name]}
    before = snapshot(tiny)
    holder = copy.deepcopy(tiny.model)
    with torch.no_grad():
        dict(holder.named_parameters())[name].copy_(params[name])
    b = encode(tiny.tokenizer, PROMPTS, ANSWERS)
    swapped = answer_scores(tiny.model, b, params)
    _same(swapped, _reference(holder, b))
    assert not torch.allclose(swapped.total, answer_scores(tiny.model, b).total)
    assert all(torch.equal(v, snapshot(tiny)[k]) for k, v in before.items())
