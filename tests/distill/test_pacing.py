import json
import typing

import pytest
import torch
from pydantic import ValidationError

from winnow.distill.divergence import DIVERGENCES, DivergenceKind
from winnow.distill.exceptions import DistillInputError
from winnow.distill.pacing import (
    NORMALISATIONS,
    KLSchedule,
    pass_rate_weight,
    pass_rates,
    problem_weights,
    skip_mask,
    teacher_calls_saved,
    weight_mass_by_bin,
)

GRID = torch.linspace(0, 1, 100_001, dtype=torch.float64)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (2.0, 1.0), (0.5, 3.0), (3.0, 0.7)])
def test_weight_is_zero_at_both_ends_and_peaks_at_alpha_over_alpha_plus_beta(alpha, beta):
    weight = pass_rate_weight(GRID, alpha, beta)
    assert weight[0] == 0 and weight[-1] == 0
    assert (weight[1:-1] > 0).all()
    peak = GRID[weight.argmax()].item()
    assert peak == pytest.approx(alpha / (alpha + beta), abs=1e-5)


def test_weight_on_floats_matches_the_formula_and_stays_a_float():
    value = pass_rate_weight(0.25, 2.0, 1.0)
    assert isinstance(value, float)
    assert value == pytest.approx(0.25**2 * 0.75)
    assert pass_rate_weight(0.0, 0.0, 1.0) == 1.0  # alpha = 0 keeps never-solved problems


@pytest.mark.parametrize("p, alpha", [(-0.1, 1.0), (1.5, 1.0), (float("nan"), 1.0), (0.5, -1.0)])
def test_weight_rejects_bad_input(p, alpha):
    with pytest.raises(DistillInputError):
        pass_rate_weight(p, alpha)


def test_pass_rates_from_a_hand_made_batch():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    problem_index = torch.tensor([7, 7, 3, 3, 9, 9, 9, 7])
    problems, rate, count = pass_rates(rewards, problem_index)
    assert problems.tolist() == [3, 7, 9]
    assert rate.tolist() == [1.0, 2 / 3, 0.0]
    assert count.tolist() == [2, 3, 3]
    assert rate.dtype == torch.float64 and count.dtype == torch.long
    bool_rate = pass_rates(rewards.bool(), problem_index)[1]
    assert torch.equal(bool_rate, rate)


@pytest.mark.parametrize(
    "rewards, problem_index",
    [
        (torch.tensor([0.0, 2.0]), torch.tensor([0, 1])),
        (torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2])),
        (torch.zeros(2, 2), torch.tensor([0, 1])),
    ],
)
def test_pass_rates_reject_bad_input(rewards, problem_index):
    with pytest.raises(DistillInputError):
        pass_rates(rewards, problem_index)


def test_mean_normalisation_averages_one_over_trained_problems():
    rate = torch.tensor([0.0, 0.25, 0.5, 1.0, 0.75], dtype=torch.float64)
    raw = problem_weights(rate, normalise="none")
    assert torch.allclose(raw, rate * (1 - rate))
    mean = problem_weights(rate)
    assert torch.equal(mean == 0, raw == 0)
    assert mean[raw > 0].mean().item() == pytest.approx(1.0)
    assert torch.allclose(mean / mean.max(), raw / raw.max())
    assert problem_weights(rate, normalise="sum").sum().item() == pytest.approx(1.0)
    same = problem_weights(torch.tensor([0.5, 0.5, 1.0]))
    assert same.tolist() == [1.0, 1.0, 0.0]  # equal live rates train like uniform weighting


@pytest.mark.parametrize("normalise", sorted(NORMALISATIONS))
def test_all_zero_weights_stay_zero_without_nan(normalise):
    weights = problem_weights(torch.tensor([0.0, 1.0, 1.0]), normalise=normalise)
    assert torch.equal(weights, torch.zeros(3))


def test_problem_weights_reject_an_unknown_normalisation():
    with pytest.raises(DistillInputError, match="mean, sum, none"):
        problem_weights(torch.tensor([0.5]), normalise="max")


def test_skipped_problems_are_the_zero_weight_ones_and_the_saving_counts_rollouts():
    rewards = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    problem_index = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    problems, rate, count = pass_rates(rewards, problem_index)
    skip = skip_mask(problem_weights(rate))
    assert skip.tolist() == [True, False, True, False]  # p = 1 and p = 0
    assert teacher_calls_saved(skip, count) == pytest.approx(4 / 10)
    per_rollout = skip[torch.searchsorted(problems, problem_index)]
    assert per_rollout.tolist() == [True] * 2 + [False] * 2 + [True] * 2 + [False] * 4
    assert (
        teacher_calls_saved(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long))
        == 0.0
    )


def test_skip_helpers_reject_bad_input():
    with pytest.raises(DistillInputError):
        skip_mask(torch.tensor([0.5, -1.0]))
    with pytest.raises(DistillInputError):
        teacher_calls_saved(torch.tensor([0, 1]), torch.tensor([2, 2]))
    with pytest.raises(DistillInputError):
        teacher_calls_saved(torch.tensor([False]), torch.tensor([1.5]))


def test_weight_mass_by_bin_sums_to_one_and_is_json_ready():
    generator = torch.Generator().manual_seed(0)
    rate = torch.rand(40, generator=generator, dtype=torch.float64)
    rate[:3] = torch.tensor([0.0, 1.0, 0.2])
    weight = problem_weights(rate)
    mass = weight_mass_by_bin(rate, weight, bins=5)
    assert list(mass) == [
        "weight_mass_p0-0.2",
        "weight_mass_p0.2-0.4",
        "weight_mass_p0.4-0.6",
        "weight_mass_p0.6-0.8",
        "weight_mass_p0.8-1",
    ]
    assert sum(mass.values()) == pytest.approx(1.0)
    assert json.loads(json.dumps(mass)) == mass
    expected = [
        weight[(rate >= i / 5) & ((rate < (i + 1) / 5) | (i == 4))].sum() / weight.sum()
        for i in range(5)
    ]
    assert list(mass.values()) == pytest.approx([value.item() for value in expected])
    empty = weight_mass_by_bin(torch.tensor([0.0, 1.0]), torch.zeros(2), bins=2)
    assert empty == {"weight_mass_p0-0.5": 0.0, "weight_mass_p0.5-1": 0.0}


def test_weight_mass_by_bin_rejects_bad_input():
    with pytest.raises(DistillInputError):
        weight_mass_by_bin(torch.tensor([0.5]), torch.tensor([1.0]), bins=0)
    with pytest.raises(DistillInputError):
        weight_mass_by_bin(torch.tensor([0.5]), torch.tensor([1.0, 1.0]))


def test_schedule_switches_from_forward_to_reverse_at_the_step():
    schedule = KLSchedule(phases=[("forward_kl", 3), ("reverse_kl", None)])
    kinds = [schedule.kind_at(step) for step in range(6)]
    assert kinds == ["forward_kl"] * 3 + ["reverse_kl"] * 3
    assert KLSchedule().kind_at(10**6) == "forward_kl"
    three = KLSchedule.model_validate(
        {"phases": [["jsd", 1], ["forward_kl", 2], ["reverse_kl", None]]}
    )
    assert [three.kind_at(step) for step in range(3)] == ["jsd", "forward_kl", "reverse_kl"]
    assert KLSchedule.model_validate(schedule.model_dump(mode="json")) == schedule
    with pytest.raises(DistillInputError):
        schedule.kind_at(-1)


@pytest.mark.parametrize(
    "phases",
    [
        [("forward_kl", 3)],
        [("forward_kl", None), ("reverse_kl", None)],
        [("forward_kl", 5), ("jsd", 5), ("reverse_kl", None)],
        [("forward_kl", 0), ("reverse_kl", None)],
        [("backward_kl", None)],
        [],
    ],
)
def test_schedule_rejects_bad_phases(phases):
    with pytest.raises(ValidationError):
        KLSchedule(phases=phases)


def test_schedule_kinds_are_the_divergences():
    assert set(typing.get_args(DivergenceKind)) == set(DIVERGENCES)
