import itertools

import pytest
import torch

from winnow.distill.evaluate import pass_at_k
from winnow.distill.exceptions import DistillInputError


def brute_force_pass_at_k(n, c, k):
    """Share of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_pass_at_k_equals_enumeration_over_all_subsets(n):
    correct = torch.arange(n + 1)
    for k in range(1, n + 1):
        expected = [brute_force_pass_at_k(n, c, k) for c in range(n + 1)]
        assert pass_at_k(n, correct, k).tolist() == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(8, torch.tensor([0]), 3).tolist() == [0.0]  # c = 0
    assert pass_at_k(8, torch.tensor([8]), 3).tolist() == [1.0]  # c = n
    assert pass_at_k(8, torch.tensor([0, 1, 8]), 8).tolist() == [0.0, 1.0, 1.0]  # k = n
    assert pass_at_k(8, torch.tensor([3]), 1).item() == pytest.approx(3 / 8)  # pass@1 = c / n


def test_pass_at_k_is_vectorised_over_problems_with_their_own_n():
    n, c = torch.tensor([4, 7, 64, 64]), torch.tensor([1, 2, 1, 40])
    expected = [brute_force_pass_at_k(4, 1, 4), brute_force_pass_at_k(7, 2, 4)]
    values = pass_at_k(n, c, 4)
    assert values.dtype == torch.float64 and values.shape == (4,)
    assert values[:2].tolist() == pytest.approx(expected, abs=1e-12)
    assert values[2].item() == pytest.approx(4 / 64)  # one correct: P(it is drawn) = k / n
    assert 0 < values[3] <= 1


def test_pass_at_k_stays_finite_where_binomials_overflow():
    value = pass_at_k(2000, torch.tensor([1000]), 1000).item()
    assert value == pytest.approx(1.0) and 0 <= value <= 1


@pytest.mark.parametrize(
    "n, c, k",
    [(4, 1, 5), (4, 1, 0), (4, 5, 2), (4, -1, 2), (4.0, 1, 2), (4, torch.tensor([1.0]), 2)],
)
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(DistillInputError):
        pass_at_k(n, c, k)


class _EchoBackend:
    """A fake sampler: response j of each prompt is the digit j % 3, so 'answer 0' is right
    for a third of the samples."""

    def sample(self, prompts, n=1, temperature=1.0, max_new_tokens=4, seed=0, top_p=1.0):
        from types import SimpleNamespace

        index = torch.arange(len(prompts)).repeat_interleave(n)
        responses = [str(j % 3) for _ in prompts for j in range(n)]
        return SimpleNamespace(problem_index=index, responses=responses)


def test_sample_answers_counts_correct_samples_per_problem_across_chunks():
    from winnow.distill.evaluate import sample_answers
    from winnow.distill.tasks import Problem

    class ExactTask:
        def verify(self, problem, response):
            return response == problem.answer

    problems = [Problem(prompt=f"{i}=", answer=str(i % 2), difficulty=1) for i in range(5)]
    counts = sample_answers(
        _EchoBackend(), ExactTask(), problems, n=6, max_new_tokens=2, prompts_per_batch=2
    ).correct
    assert counts.dtype == torch.long and counts.tolist() == [2, 2, 2, 2, 2]
    assert pass_at_k(6, counts, 1).tolist() == pytest.approx([1 / 3] * 5)


def test_sample_answers_counts_distinct_answers_per_problem():
    from winnow.distill.evaluate import sample_answers
    from winnow.distill.tasks import Problem

    class ExactTask:
        def verify(self, problem, response):
            return response == problem.answer

    problems = [Problem(prompt=f"{i}=", answer="1", difficulty=1) for i in range(3)]
    for n, distinct in ((1, 1), (2, 2), (6, 3)):  # responses 0, 1, 2, 0, 1, 2
        sampled = sample_answers(_EchoBackend(), ExactTask(), problems, n, 2, prompts_per_batch=2)
        assert sampled.distinct.tolist() == [distinct] * 3
        assert sampled.correct.tolist() == [n // 3 + (n % 3 > 1)] * 3


def test_greedy_sampling_of_a_real_model_gives_one_distinct_answer():
    from winnow.distill.evaluate import sample_answers
    from winnow.distill.models import TinyModelConfig, build_tiny_model, char_tokenizer
    from winnow.distill.rollout import TransformersBackend
    from winnow.distill.tasks import AdditionTask

    task = AdditionTask(digits=(1,))
    tokenizer = char_tokenizer(task.alphabet)
    model = build_tiny_model(TinyModelConfig(hidden_size=16, num_heads=2), tokenizer, seed=0)
    backend = TransformersBackend(model, tokenizer)
    problems = task.problems("test", 4, seed=0)
    greedy = sample_answers(backend, task, problems, n=5, max_new_tokens=3, temperature=0.0)
    assert greedy.distinct.tolist() == [1, 1, 1, 1]
    sampled = sample_answers(backend, task, problems, n=5, max_new_tokens=3, temperature=2.0)
    assert sampled.distinct.max() > 1  # an untrained model samples near-uniform tokens
