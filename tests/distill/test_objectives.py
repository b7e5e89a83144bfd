import math

import pytest
import torch

from winnow.distill import objectives
from winnow.distill.divergence import reverse_kl
from winnow.distill.exceptions import DistillInputError
from winnow.distill.objectives import (
    ACE_FORMS,
    ace_modulation,
    clipped_policy_loss,
    dynamic_sampling_mask,
    group_advantages,
    k3_kl,
    reduce_token_loss,
)

# Four groups, interleaved so that nothing may rely on rows being contiguous:
# group 5 = [1, 0, 0, 0], group 2 = [1, 0], group 9 = [1, 1, 1], group 4 = [0] (a singleton).
REWARDS = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
GROUP = torch.tensor([5, 2, 5, 9, 2, 5, 9, 5, 9, 4])


def test_group_advantages_match_a_hand_computed_batch():
    half = 1 / math.sqrt(2)  # group 2: centred +-0.5, unbiased std sqrt(0.5)
    expected = torch.tensor(
        [1.5, half, -0.5, 0.0, -half, -0.5, 0.0, -0.5, 0.0, 0.0], dtype=torch.float64
    )
    advantages = group_advantages(REWARDS, GROUP, eps=1e-12)
    assert torch.allclose(advantages, expected, atol=1e-10)
    with_eps = group_advantages(REWARDS, GROUP)
    assert with_eps[0].item() == pytest.approx(0.75 / (0.5 + 1e-6), rel=1e-12)


def test_group_advantages_equal_the_per_group_torch_std_formula():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.rand(24, generator=generator, dtype=torch.float64)
    group = torch.randperm(24, generator=generator) % 4
    advantages = group_advantages(rewards, group, eps=1e-4)
    for g in range(4):
        rows = group == g
        values = rewards[rows]
        expected = (values - values.mean()) / (values.std() + 1e-4)  # TRL's group scaling
        assert torch.allclose(advantages[rows], expected, atol=1e-12)


def test_dr_grpo_only_centres():
    advantages = group_advantages(REWARDS, GROUP, scale_by_std=False)
    expected = [0.75, 0.5, -0.25, 0.0, -0.5, -0.25, 0.0, -0.25, 0.0, 0.0]
    assert advantages.tolist() == pytest.approx(expected, abs=1e-12)


def test_group_advantages_need_a_positive_eps():
    with pytest.raises(DistillInputError, match="eps"):
        group_advantages(REWARDS, GROUP, eps=0.0)


def test_group_advantages_of_bool_rewards_are_float_and_carry_no_grad():
    rewards = torch.tensor([True, False, True, True])
    advantages = group_advantages(rewards, torch.tensor([0, 0, 1, 1]))
    assert advantages.dtype == torch.float32
    scores = torch.tensor([1.0, 0.0], requires_grad=True)
    assert not group_advantages(scores, torch.tensor([0, 0])).requires_grad


@pytest.mark.parametrize(
    "rewards, group",
    [
        (torch.ones(3), torch.tensor([0.0, 0.0, 1.0])),
        (torch.ones(3), torch.tensor([0, 1])),
        (torch.ones(3), torch.tensor([True, False, True])),
        (torch.ones(2, 2), torch.tensor([0, 1])),
    ],
)
def test_group_functions_reject_bad_input(rewards, group):
    with pytest.raises(DistillInputError):
        group_advantages(rewards, group)
    with pytest.raises(DistillInputError):
        dynamic_sampling_mask(rewards, group)


def ace_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    advantages = torch.randn(16, generator=generator, dtype=torch.float64)
    advantages[:2] = 0.0
    correct = torch.rand(16, generator=generator) < 0.5
    confidence = 3 * torch.randn(16, generator=generator, dtype=torch.float64)
    return advantages, correct, confidence


@pytest.mark.parametrize("form", sorted(ACE_FORMS))
def test_ace_at_alpha_zero_is_plain_grpo_exactly(form):
    advantages, correct, confidence = ace_batch()
    assert torch.equal(ace_modulation(advantages, correct, confidence, 0.0, form), advantages)


@pytest.mark.parametrize("form", sorted(ACE_FORMS))
def test_ace_changes_only_wrong_rollouts_with_negative_advantage(form):
    advantages, correct, confidence = ace_batch(1)
    modulated = ace_modulation(advantages, correct, confidence, 0.5, form)
    target = ~correct & (advantages < 0)
    assert target.any() and (~target).any() and (correct & (advantages < 0)).any()
    assert torch.equal(modulated[~target], advantages[~target])
    assert (modulated[target] < advantages[target]).all()  # a harsher penalty, never a softer one


def test_ace_forms_follow_their_formulas():
    advantages, correct, confidence = ace_batch(2)
    target = ~correct & (advantages < 0)
    softplus = torch.log1p(torch.exp(confidence))
    multiplicative = ace_modulation(advantages, correct, confidence, 0.3)
    additive = ace_modulation(advantages, correct, confidence, 0.3, form="additive")
    assert torch.allclose(multiplicative[target], (advantages * (1 + 0.3 * softplus))[target])
    assert torch.allclose(additive[target], (advantages - 0.3 * softplus)[target])


def test_ace_penalises_confident_errors_more():
    advantages = torch.full((3,), -0.5)
    confidence = torch.tensor([-4.0, 0.0, 4.0], requires_grad=True)
    modulated = ace_modulation(advantages, torch.zeros(3, dtype=torch.bool), confidence, 1.0)
    assert modulated[0] > modulated[1] > modulated[2]
    assert not modulated.requires_grad  # the confidence is a constant, like any advantage


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": -0.1},
        {"form": "relu"},
        {"correct": torch.tensor([1, 0, 1])},
        {"confidence": torch.zeros(2)},
    ],
)
def test_ace_rejects_bad_input(kwargs):
    arguments = {
        "advantages": torch.tensor([-1.0, 0.5, -0.2]),
        "correct": torch.tensor([False, False, True]),
        "confidence": torch.zeros(3),
        "alpha": 1.0,
    } | kwargs
    with pytest.raises(DistillInputError):
        ace_modulation(**arguments)


RATIOS = [0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5]


def clip_case():
    ratio = torch.tensor(RATIOS * 2, dtype=torch.float64)
    advantages = torch.tensor([1.5] * len(RATIOS) + [-2.0] * len(RATIOS), dtype=torch.float64)
    logp_old = torch.linspace(-3, -0.5, ratio.numel(), dtype=torch.float64)
    logp_new = (logp_old + ratio.log()).requires_grad_()
    return ratio, advantages, logp_old, logp_new


@pytest.mark.parametrize("eps_low, eps_high", [(0.2, 0.28), (0.2, 0.2), (0.15, 0.4)])
def test_clipped_loss_matches_the_piecewise_formula_and_its_gradient(eps_low, eps_high):
    ratio, advantages, logp_old, logp_new = clip_case()
    loss = clipped_policy_loss(logp_new, logp_old, advantages, eps_low, eps_high)
    positive = advantages > 0
    expected = torch.where(
        positive,
        -advantages * ratio.clamp(max=1 + eps_high),
        -advantages * ratio.clamp(min=1 - eps_low),
    )
    assert torch.allclose(loss, expected, atol=1e-12)

    loss.sum().backward()
    clipped = (positive & (ratio > 1 + eps_high)) | (~positive & (ratio < 1 - eps_low))
    assert clipped.any() and (~clipped).any()
    assert torch.equal(logp_new.grad[clipped], torch.zeros(int(clipped.sum()), dtype=torch.float64))
    # d(-A r)/d logp_new = -A r where the clip does not bind
    assert torch.allclose(logp_new.grad[~clipped], (-advantages * ratio)[~clipped], atol=1e-12)


def test_clip_higher_lets_a_positive_token_grow_past_ppo_clip():
    logp_old = torch.tensor([-1.0], dtype=torch.float64)
    logp_new = (logp_old + math.log(1.25)).requires_grad_()
    advantage = torch.tensor([1.0], dtype=torch.float64)
    clipped_policy_loss(logp_new, logp_old, advantage, 0.2, 0.2).sum().backward()
    assert logp_new.grad.item() == 0.0
    logp_new.grad = None
    clipped_policy_loss(logp_new, logp_old, advantage, 0.2, 0.28).sum().backward()
    assert logp_new.grad.item() == pytest.approx(-1.25)


def test_clipped_loss_rejects_bad_input():
    logp = torch.zeros(3)
    with pytest.raises(DistillInputError):
        clipped_policy_loss(logp, logp, logp, eps_low=1.0)
    with pytest.raises(DistillInputError):
        clipped_policy_loss(logp, logp, logp, eps_high=-0.1)
    with pytest.raises(DistillInputError):
        clipped_policy_loss(logp, torch.zeros(2), logp)


def test_k3_is_non_negative_zero_when_equal_and_matches_trl():
    generator = torch.Generator().manual_seed(3)
    logp_new = -5 * torch.rand(64, generator=generator, dtype=torch.float64)
    logp_ref = -5 * torch.rand(64, generator=generator, dtype=torch.float64)
    kl = k3_kl(logp_new, logp_ref)
    assert (kl >= 0).all()
    assert torch.equal(k3_kl(logp_new, logp_new), torch.zeros(64, dtype=torch.float64))
    trl = torch.exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1  # grpo_trainer.py
    assert torch.allclose(kl, trl, atol=1e-12)


def test_k3_is_unbiased_for_kl_to_the_reference_under_the_policy():
    generator = torch.Generator().manual_seed(4)
    policy = torch.randn(2, 11, generator=generator, dtype=torch.float64).log_softmax(-1)
    reference = torch.randn(2, 11, generator=generator, dtype=torch.float64).log_softmax(-1)
    expectation = (policy.exp() * k3_kl(policy.flatten(), reference.flatten()).view(2, 11)).sum(-1)
    assert torch.allclose(expectation, reverse_kl(policy, reference), atol=1e-12)


def test_dynamic_sampling_drops_all_correct_all_wrong_and_single_groups():
    keep = dynamic_sampling_mask(REWARDS, GROUP)
    assert keep.tolist() == [g in (5, 2) for g in GROUP.tolist()]
    graded = dynamic_sampling_mask(torch.tensor([0.5, 0.5, 0.2, 0.7]), torch.tensor([0, 0, 1, 1]))
    assert graded.tolist() == [False, False, True, True]
    assert dynamic_sampling_mask(torch.tensor([True, False]), torch.tensor([3, 3])).all()


def test_reduce_token_loss_token_and_sequence_means_on_a_hand_example():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    sequence = torch.tensor([0, 0, 0, 2])  # rollout 1 has no kept tokens
    assert reduce_token_loss(values, sequence, "token").item() == pytest.approx(4.0)
    assert reduce_token_loss(values, sequence, "sequence").item() == pytest.approx(6.0)
    with pytest.raises(DistillInputError, match="token, sequence"):
        reduce_token_loss(values, sequence, "batch")


def test_exported_names_exist():
    for name in objectives.__all__:
        assert hasattr(objectives, name), name
