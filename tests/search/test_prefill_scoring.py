"""Prefill-only yes/no scoring: the folded margin equals the LM's logit difference; prefix-cache
reuse equals full sequences, with and without gradient; batching invariance."""

import copy

import numpy as np
import pytest
import torch

from tests.search.conftest import tiny_causal_lm
from winnow.search.exceptions import SearchInputError
from winnow.search.prefill_scoring import (
    PrefixScorer,
    answer_token_ids,
    folded_answer_vector,
    plan_batches,
    score_full_sequences,
    score_with_prefix_cache,
    token_budget,
    yes_probability,
)

PREFIX = "judge relevance.\nquery: where do cats sleep\n"
CANDIDATES = [
    "cats sleep on warm mats. relevant?",
    "no.",
    "stock markets fell sharply today, and analysts expect more losses soon. relevant?",
    "a kitten naps in the sun. relevant?",
    "x",
]


def reference_scores(model, tokenizer, yes_id, no_id):
    """One unpadded forward per full prompt, softmax over the two answer logits."""
    scores = []
    for candidate in CANDIDATES:
        ids = (
            tokenizer(PREFIX)["input_ids"]
            + tokenizer(candidate, add_special_tokens=False)["input_ids"]
        )
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        scores.append(torch.softmax(logits[[yes_id, no_id]], dim=0)[0].item())
    return np.asarray(scores)


def lm_margins(model, prefix, candidates, yes_id, no_id):
    """``logits[:, -1, yes] - logits[:, -1, no]`` of the model's own full-vocabulary forward."""
    margins = []
    with torch.no_grad():
        for candidate in candidates:
            logits = model(torch.tensor([list(prefix) + list(candidate)])).logits
            margins.append(logits[0, -1, yes_id] - logits[0, -1, no_id])
    return torch.stack(margins)


def ragged_ids(vocab_size, seed=0):
    """A 7-token prefix and 7 candidates of 1 to 12 tokens, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, vocab_size, (7,), generator=generator).tolist()
    lengths = [5, 1, 12, 3, 3, 9, 2]
    candidates = [torch.randint(3, vocab_size, (n,), generator=generator).tolist() for n in lengths]
    return prefix, candidates


@pytest.fixture(scope="module")
def llama64():
    return tiny_causal_lm("llama", 64, seed=3)


@pytest.mark.parametrize("scorer", [score_with_prefix_cache, score_full_sequences])
@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_folded_margin_equals_lm_logit_difference(llama64, scorer, batch_size):
    prefix, candidates = ragged_ids(64)
    expected = lm_margins(llama64, prefix, candidates, 10, 20)
    with torch.no_grad():
        margins = scorer(llama64, prefix, candidates, 10, 20, batch_size)
    assert margins.shape == (7,) and margins.dtype == torch.float32
    torch.testing.assert_close(margins, expected, atol=1e-5, rtol=0)
    assert expected.std() > 1e-2  # candidates are told apart, so equality is not trivial


def test_folded_vector_includes_the_output_bias(llama64):
    model = copy.deepcopy(llama64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model.lm_head = torch.nn.Linear(32, 64, bias=True)
    prefix, candidates = ragged_ids(64, seed=1)
    vector, offset = folded_answer_vector(model, 5, 6)
    torch.testing.assert_close(vector, model.lm_head.weight[5] - model.lm_head.weight[6])
    torch.testing.assert_close(offset, model.lm_head.bias[5] - model.lm_head.bias[6])
    with torch.no_grad():
        margins = score_with_prefix_cache(model, prefix, candidates, 5, 6, batch_size=3)
    expected = lm_margins(model, prefix, candidates, 5, 6)
    torch.testing.assert_close(margins, expected, atol=1e-5, rtol=0)


def test_softcapped_logits_are_not_folded(llama64):
    # Llama's forward ignores the setting; the reference caps its two logits by hand.
    model = copy.deepcopy(llama64)
    model.config.final_logit_softcapping = 0.5
    prefix, candidates = ragged_ids(64)
    with pytest.raises(SearchInputError, match="final_logit_softcapping"):
        folded_answer_vector(model, 10, 20)
    with torch.no_grad():
        margins = score_with_prefix_cache(model, prefix, candidates, 10, 20, batch_size=4)
        hidden = [
            model.model(torch.tensor([prefix + c])).last_hidden_state[0, -1] for c in candidates
        ]
    logits = torch.stack(hidden) @ model.lm_head.weight[[10, 20]].T
    capped = (logits / 0.5).tanh() * 0.5
    torch.testing.assert_close(margins, capped[:, 0] - capped[:, 1], atol=1e-5, rtol=0)


def test_prefix_cache_gradient_equals_full_sequence_gradient(llama64):
    prefix, candidates = ragged_ids(64, seed=2)
    weights = torch.linspace(-1.0, 1.0, len(candidates))
    gradients = []
    for scorer in (score_with_prefix_cache, score_full_sequences):
        model = copy.deepcopy(llama64)
        (scorer(model, prefix, candidates, 10, 20, batch_size=3) * weights).sum().backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    cached, full = gradients
    assert cached.keys() == full.keys() and "model.layers.0.self_attn.q_proj.weight" in cached
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-5, rtol=1e-4)


def test_prefix_reuse_equals_full_sequences(tiny_lm, tokenizer):
    yes_id, no_id = answer_token_ids(tokenizer, "y", "n")
    reused = PrefixScorer(tiny_lm, tokenizer, "y", "n", batch_size=3).score(PREFIX, CANDIDATES)
    full = PrefixScorer(tiny_lm, tokenizer, "y", "n", batch_size=3, reuse_prefix=False).score(
        PREFIX, CANDIDATES
    )
    reference = reference_scores(tiny_lm, tokenizer, yes_id, no_id)
    np.testing.assert_allclose(reused, full, atol=1e-5)
    np.testing.assert_allclose(reused, reference, atol=1e-5)
    assert reused.shape == (5,) and reused.dtype == np.float32
    assert reused.std() > 1e-3  # candidates are told apart, so equality is not trivial
    margins = PrefixScorer(tiny_lm, tokenizer, "y", "n", batch_size=3).margins(PREFIX, CANDIDATES)
    assert margins.shape == (5,) and margins.dtype == np.float32
    np.testing.assert_allclose(1 / (1 + np.exp(-margins)), reused, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_scores_do_not_depend_on_batching(tiny_lm, tokenizer, batch_size):
    yes_id, no_id = answer_token_ids(tokenizer, "y", "n")
    prefix = tokenizer(PREFIX)["input_ids"]
    candidates = tokenizer(CANDIDATES, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        one_batch = score_with_prefix_cache(tiny_lm, prefix, candidates, yes_id, no_id, 8)
        batched = score_with_prefix_cache(tiny_lm, prefix, candidates, yes_id, no_id, batch_size)
        full = score_full_sequences(tiny_lm, prefix, candidates, yes_id, no_id, batch_size)
    torch.testing.assert_close(batched, one_batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(full, one_batch, atol=1e-5, rtol=0)


def test_prefix_cache_is_not_mutated_across_requests(tiny_lm, tokenizer):
    scorer = PrefixScorer(tiny_lm, tokenizer, "y", "n", batch_size=2)
    first = scorer.score(PREFIX, CANDIDATES)
    scorer.score("other query\n", CANDIDATES[:2])
    np.testing.assert_array_equal(scorer.score(PREFIX, CANDIDATES), first)


def test_yes_probability_is_two_way_softmax():
    yes, no = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    expected = torch.exp(yes) / (torch.exp(yes) + torch.exp(no))
    torch.testing.assert_close(yes_probability(yes, no), expected)


def test_answers_must_be_single_tokens(tokenizer):
    with pytest.raises(SearchInputError, match="is 3 tokens"):
        answer_token_ids(tokenizer, "yes", "n")
    with pytest.raises(SearchInputError, match="same token"):
        answer_token_ids(tokenizer, "y", "y")


def test_plan_batches_fits_the_token_budget():
    lengths = [5, 40, 12, 12, 3, 70, 8]
    batches = plan_batches(lengths, max_tokens=60)
    covered = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(covered, np.arange(len(lengths)))
    for batch in batches:
        cost = len(batch) * max(lengths[i] for i in batch)
        assert cost <= 60 or len(batch) == 1  # 70 tokens exceed the budget alone
    assert [len(b) for b in plan_batches([4] * 10, max_tokens=100, max_batch_size=4)] == [4, 4, 2]


def test_token_budget_from_latency():
    # 50 ms budget, 10 ms fixed cost, 0.1 ms per padded token -> 400 tokens
    assert token_budget(0.050, 0.010, 0.0001) == 400
    with pytest.raises(SearchInputError, match="no room"):
        token_budget(0.005, 0.010, 0.0001)
