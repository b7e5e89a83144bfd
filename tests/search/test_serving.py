"""Prefill-only P(yes) scoring: prefix-cache reuse equals full sequences; batching invariance."""

import numpy as np
import pytest
import torch

from winnow.search.exceptions import SearchInputError
from winnow.search.serving import (
    PrefixScorer,
    answer_token_ids,
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


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_scores_do_not_depend_on_batching(tiny_lm, tokenizer, batch_size):
    yes_id, no_id = answer_token_ids(tokenizer, "y", "n")
    prefix = tokenizer(PREFIX)["input_ids"]
    candidates = tokenizer(CANDIDATES, add_special_tokens=False)["input_ids"]
    one_batch = score_with_prefix_cache(tiny_lm, prefix, candidates, yes_id, no_id, batch_size=8)
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
