import math

import pytest
import torch

from winnow.distill import objectives
from winnow.distill.divergence import reverse_kl
from winnow.distill.exceptions import DistillInputError
from winnow.distill.objectives import (
    ACE_FORMS,
    ace_modulation,
    clip_binds,
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


class TinyDecoder(torch.nn.Module):
    """A float64 stand-in for a decoder: a causal running mean of embeddings, mixed and squashed.

    Its output weight is its input embedding (tied), as in the tiny models.
    """

    def __init__(self, vocab, width=6, positions=16, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)

        def randn(*shape):
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        self.embedding = torch.nn.Parameter(randn(vocab, width))
        self.positions = torch.nn.Parameter(0.3 * randn(positions, width))
        self.mixer = torch.nn.Parameter(randn(width, width) / width**0.5)
        self.calls = 0

    def forward(self, input_ids, attention_mask, position_ids):
        self.calls += 1
        mask = attention_mask.unsqueeze(-1).to(torch.float64)
        embedded = (self.embedding[input_ids] + self.positions[position_ids]) * mask
        prefix = embedded.cumsum(1) / mask.cumsum(1).clamp_min(1)
        return torch.tanh(2 * prefix @ self.mixer)


# Groups 0 and 2 have differing rewards; group 1 (all correct) and group 3 (all wrong) are dropped.
GRPO_REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
GRPO_GROUP = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])


@pytest.fixture(scope="module")
def grpo_batch():
    from winnow.distill.models import char_tokenizer, encode_prompts
    from winnow.distill.rollout import assemble_batch

    tokenizer = char_tokenizer("abcd")
    eos = tokenizer.eos_token_id
    prompts = ["ab", "abcd", "c", "dd"]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [prompts[g] for g in GRPO_GROUP.tolist()])
    generator = torch.Generator().manual_seed(3)
    generated = []
    for length in [5, 2, 4, 3, 6, 1, 4, 5, 2, 3]:
        tokens = (4 + torch.randint(4, (length,), generator=generator)).tolist()
        generated.append([*tokens, eos, 5, 6] if length % 2 else tokens)
    return assemble_batch(tokenizer, prompt_ids, prompt_mask, generated, GRPO_GROUP, {eos})


def grpo_models(batch):
    vocab = int(batch.input_ids.max()) + 1
    return TinyDecoder(vocab, seed=0), TinyDecoder(vocab, seed=1)


def dense_token_log_probs(model, batch):
    """``[B, T - 1]`` log-probabilities of every next token, from full logits."""
    hidden = model(batch.input_ids, batch.attention_mask, batch.position_ids)[:, :-1]
    logp = torch.log_softmax(hidden @ model.embedding.T, dim=-1)
    return logp.gather(2, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def dense_grpo(policy, reference, batch, rewards, old_log_probs, kl_beta):
    """GRPO written out: per-group advantages, clipped ratios, k3 KL, token mean."""
    advantages = torch.zeros_like(rewards)
    for g in GRPO_GROUP.unique().tolist():
        rows = GRPO_GROUP.eq(g)
        values = rewards[rows]
        if values.max() > values.min():
            advantages[rows] = (values - values.mean()) / (values.std() + 1e-6)
    logp = dense_token_log_probs(policy, batch)
    mask = batch.response_mask[:, 1:]
    logp_old = torch.zeros_like(logp)
    logp_old[mask] = old_log_probs
    ratio = torch.exp(logp - logp_old)
    advantage = advantages[:, None]
    per_token = -torch.minimum(ratio * advantage, ratio.clamp(0.8, 1.28) * advantage)
    if kl_beta:
        with torch.no_grad():
            reference_logp = dense_token_log_probs(reference, batch)
        log_ratio = reference_logp - logp
        per_token = per_token + kl_beta * (torch.exp(log_ratio) - log_ratio - 1)
    counted = mask & (advantages != 0)[:, None]
    return per_token[counted].sum() / counted.sum()


def old_log_probs_of(policy, batch, seed=0):
    with torch.no_grad():
        logp = dense_token_log_probs(policy, batch)[batch.response_mask[:, 1:]]
    noise = torch.randn(logp.shape, generator=torch.Generator().manual_seed(seed), dtype=logp.dtype)
    return logp + 0.3 * noise


@pytest.mark.parametrize("kl_beta", [0.0, 0.1])
def test_grpo_loss_equals_a_dense_hand_written_grpo(grpo_batch, kl_beta):
    policy, reference = grpo_models(grpo_batch)
    old = old_log_probs_of(policy, grpo_batch)
    result = objectives.grpo_loss(
        policy,
        policy.embedding,
        reference,
        reference.embedding,
        grpo_batch,
        GRPO_REWARDS,
        old,
        kl_beta=kl_beta,
        chunk_size=3,
    )
    grads = torch.autograd.grad(result.loss, list(policy.parameters()))
    expected = dense_grpo(policy, reference, grpo_batch, GRPO_REWARDS, old, kl_beta)
    expected_grads = torch.autograd.grad(expected, list(policy.parameters()))

    torch.testing.assert_close(result.loss, expected, rtol=1e-12, atol=1e-14)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert result.kept_rollouts.tolist() == [g in (0, 2) for g in GRPO_GROUP.tolist()]
    kept_tokens = result.kept_rollouts[grpo_batch.loss_rows()[0]]
    assert result.per_token.shape == (int(kept_tokens.sum()),)
    with torch.no_grad():
        ratio = torch.exp(
            dense_token_log_probs(policy, grpo_batch)[grpo_batch.response_mask[:, 1:]] - old
        )
    clipped = (ratio < 0.8) | (ratio > 1.28)
    assert clipped[kept_tokens].any() and (~clipped[kept_tokens]).any()  # both branches are tested
    torch.testing.assert_close(result.ratio, ratio[kept_tokens], rtol=1e-12, atol=0)
    advantage = result.advantages[grpo_batch.loss_rows()[0]][kept_tokens]
    binds = ((ratio[kept_tokens] > 1.28) & (advantage > 0)) | (
        (ratio[kept_tokens] < 0.8) & (advantage < 0)
    )
    assert torch.equal(result.clipped, binds)


def test_clip_binds_only_where_the_clipped_loss_has_no_gradient():
    ratio = torch.tensor([0.5, 0.5, 1.0, 1.5, 1.5, 1.25, 0.81], requires_grad=True)
    advantages = torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    binds = clip_binds(ratio.detach(), advantages, 0.2, 0.28)
    assert binds.tolist() == [True, False, False, True, False, False, False]
    # exp(log r - 0) = r: the clipped loss's gradient is zero exactly where the clip binds.
    loss = clipped_policy_loss(ratio.log(), torch.zeros(7), advantages, 0.2, 0.28)
    (grad,) = torch.autograd.grad(loss.sum(), ratio)
    assert torch.equal(grad == 0, binds)


def test_sampled_log_probs_are_the_policys_at_the_loss_rows_without_grad(grpo_batch):
    policy, _ = grpo_models(grpo_batch)
    got = objectives.sampled_log_probs(policy, policy.embedding, grpo_batch, chunk_size=4)
    with torch.no_grad():
        expected = dense_token_log_probs(policy, grpo_batch)[grpo_batch.response_mask[:, 1:]]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    assert not got.requires_grad
    # As old_log_probs of an unchanged policy, every ratio is 1 and nothing is clipped.
    result = objectives.grpo_loss(
        policy, policy.embedding, policy, policy.embedding, grpo_batch, GRPO_REWARDS, got
    )
    torch.testing.assert_close(result.ratio, torch.ones_like(result.ratio))
    assert not result.clipped.any()


def test_ace_changes_only_the_loss_of_wrong_rollouts_with_negative_advantage(grpo_batch):
    policy, reference = grpo_models(grpo_batch)
    models = (policy, policy.embedding, reference, reference.embedding, grpo_batch, GRPO_REWARDS)
    plain = objectives.grpo_loss(*models)
    ace = objectives.grpo_loss(*models, alpha_ace=0.5)

    target = (GRPO_REWARDS < 1) & (plain.advantages < 0)
    sequence = grpo_batch.loss_rows()[0][plain.kept_rollouts[grpo_batch.loss_rows()[0]]]
    changed = target[sequence]
    assert target.any() and (~target & plain.kept_rollouts).any()
    assert torch.equal(ace.advantages[~target], plain.advantages[~target])
    assert (ace.advantages[target] < plain.advantages[target]).all()
    assert torch.equal(ace.per_token[~changed], plain.per_token[~changed])
    assert (ace.per_token[changed] > plain.per_token[changed]).all()  # ratio 1: loss is -A

    with torch.no_grad():
        gap = dense_token_log_probs(policy, grpo_batch) - dense_token_log_probs(
            reference, grpo_batch
        )
    sums = (gap * grpo_batch.response_mask[:, 1:]).sum(1)
    kept = ace.kept_rollouts
    torch.testing.assert_close(ace.confidence[kept], sums[kept], rtol=1e-12, atol=1e-12)
    assert ace.confidence[~kept].isnan().all() and plain.confidence.isnan().all()


def test_groups_with_equal_rewards_contribute_nothing(grpo_batch):
    policy, reference = grpo_models(grpo_batch)
    old = old_log_probs_of(policy, grpo_batch, seed=1)
    models = (policy, policy.embedding, reference, reference.embedding)
    full = objectives.grpo_loss(*models, grpo_batch, GRPO_REWARDS, old, alpha_ace=0.3, kl_beta=0.1)
    kept = full.kept_rollouts.nonzero().squeeze(1)
    old_kept = old[full.kept_rollouts[grpo_batch.loss_rows()[0]]]
    alone = objectives.grpo_loss(
        *models, grpo_batch.select(kept), GRPO_REWARDS[kept], old_kept, alpha_ace=0.3, kl_beta=0.1
    )
    torch.testing.assert_close(full.loss, alone.loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(full.per_token, alone.per_token, rtol=1e-12, atol=1e-14)
    assert torch.equal(full.advantages[~full.kept_rollouts], torch.zeros(5, dtype=torch.float64))


def test_grpo_with_no_informative_group_is_an_exact_zero_that_backpropagates(grpo_batch):
    policy, reference = grpo_models(grpo_batch)
    rewards = torch.ones(len(GRPO_GROUP), dtype=torch.float64)
    result = objectives.grpo_loss(
        policy, policy.embedding, reference, reference.embedding, grpo_batch, rewards, kl_beta=0.1
    )
    assert result.loss.item() == 0.0 and result.loss.requires_grad
    assert result.per_token.shape == (0,) and not result.kept_rollouts.any()
    result.loss.backward()
    assert torch.equal(policy.embedding.grad, torch.zeros_like(policy.embedding))
    assert policy.calls == 0 and reference.calls == 0


@pytest.mark.parametrize(
    ("alpha_ace", "kl_beta", "reference_calls"), [(0.0, 0.0, 0), (0.5, 0.0, 1), (0.0, 0.1, 1)]
)
def test_the_reference_runs_only_when_ace_or_kl_reads_it(
    grpo_batch, alpha_ace, kl_beta, reference_calls
):
    policy, reference = grpo_models(grpo_batch)
    objectives.grpo_loss(
        policy,
        policy.embedding,
        reference,
        reference.embedding,
        grpo_batch,
        GRPO_REWARDS,
        alpha_ace=alpha_ace,
        kl_beta=kl_beta,
    )
    assert policy.calls == 1 and reference.calls == reference_calls


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"alpha_ace": -0.1}, "alpha_ace"),
        ({"ace_form": "relu"}, "ace_form"),
        ({"kl_beta": -1.0}, "kl_beta"),
        ({"eps_low": 1.0}, "eps_low"),
        ({"reduction": "batch"}, "reduction"),
        ({"rewards": torch.ones(3)}, "rewards must be"),
        ({"old_log_probs": torch.zeros(2)}, "old_log_probs must be"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_grpo_loss_rejects_bad_input(grpo_batch, override, match):
    policy, reference = grpo_models(grpo_batch)
    arguments = {
        "policy": policy,
        "policy_weight": policy.embedding,
        "reference": reference,
        "reference_weight": reference.embedding,
        "batch": grpo_batch,
        "rewards": GRPO_REWARDS,
    } | override
    with pytest.raises(DistillInputError, match=match):
        objectives.grpo_loss(**arguments)


@pytest.mark.parametrize("reduction", ["token", "sequence"])
def test_opsa_loss_is_a_fixed_negative_advantage_times_the_sampled_log_probs(grpo_batch, reduction):
    policy, _ = grpo_models(grpo_batch)
    loss, per_token = objectives.opsa_loss(
        policy, policy.embedding, grpo_batch, advantage=-0.5, chunk_size=3, reduction=reduction
    )
    logp = dense_token_log_probs(policy, grpo_batch)
    mask = grpo_batch.response_mask[:, 1:]
    torch.testing.assert_close(per_token, 0.5 * logp[mask], rtol=1e-12, atol=1e-14)
    if reduction == "token":
        expected = 0.5 * logp[mask].mean()
    else:  # each rollout's mean, then their mean
        expected = torch.stack([0.5 * logp[i][mask[i]].mean() for i in range(len(mask))]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    # Descending it lowers the log-probability of every sampled token the same way.
    (grad,) = torch.autograd.grad(loss, policy.mixer)
    assert grad.abs().sum() > 0
