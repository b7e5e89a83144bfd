import collections
import dataclasses
import json
import types
import typing

import pytest
import torch
from pydantic import ValidationError

from winnow.distill.divergence import dense_divergence
from winnow.distill.exceptions import DistillInputError
from winnow.distill.token_metrics import selection_summary
from winnow.distill.tokens import (
    SELECTORS,
    SelectorConfig,
    TokenStats,
    kept_count,
    quadrants,
    select_tokens,
    token_statistics,
    token_weights,
)

K, V = 37, 50
FRACTION_SELECTORS = ["random", "entropy_topk", "entropy_sample", "divergence_topk", "soft_or"]


def make_stats(rows=K, sequences=4, seed=0):
    """Distinct entropies and divergences over ``sequences`` responses, rows shuffled so that
    rules must go by ``sequence`` and ``offset`` rather than row order."""
    generator = torch.Generator().manual_seed(seed)
    sequence = torch.arange(rows) * sequences // max(rows, 1)
    offset = torch.arange(rows) - torch.searchsorted(sequence, sequence)
    order = torch.randperm(rows, generator=generator)
    return TokenStats(
        entropy=torch.rand(rows, generator=generator)[order] * 3,
        divergence=torch.rand(rows, generator=generator)[order],
        sequence=sequence[order],
        offset=offset[order],
    )


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_token_statistics_equal_dense_computation():
    generator = seeded(1)
    student_hidden = torch.randn(K, 8, generator=generator, dtype=torch.float64)
    student_weight = torch.randn(V, 8, generator=generator, dtype=torch.float64)
    teacher_hidden = torch.randn(K, 6, generator=generator, dtype=torch.float64)
    teacher_weight = torch.randn(V, 6, generator=generator, dtype=torch.float64)
    sequence, offset = torch.arange(K) // 10, torch.arange(K) % 10
    student_hidden.requires_grad_()

    stats = token_statistics(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        sequence,
        offset,
        kind="jsd",
        beta=0.3,
        temperature=1.5,
        chunk_size=10,
    )

    student_logits = (student_hidden @ student_weight.T).detach() / 1.5
    entropy = -(torch.softmax(student_logits, -1) * torch.log_softmax(student_logits, -1)).sum(-1)
    divergence = dense_divergence(
        student_hidden @ student_weight.T, teacher_hidden @ teacher_weight.T, "jsd", 0.3, 1.5
    )
    torch.testing.assert_close(stats.entropy, entropy)
    torch.testing.assert_close(stats.divergence, divergence.detach())
    assert not stats.entropy.requires_grad and not stats.divergence.requires_grad
    assert torch.equal(stats.sequence, sequence) and torch.equal(stats.offset, offset)


def test_token_statistics_of_no_rows_and_bad_positions():
    hidden, weight = torch.zeros(0, 4), torch.zeros(V, 4)
    no_rows = torch.zeros(0, dtype=torch.long)
    empty = token_statistics(hidden, weight, hidden, weight, no_rows, no_rows)
    assert empty.entropy.shape == (0,) and empty.entropy.dtype == torch.float32
    with pytest.raises(
        DistillInputError, match=r"offset must be an integer tensor of shape \(3,\)"
    ):
        token_statistics(
            torch.zeros(3, 4), weight, torch.zeros(3, 4), weight, torch.arange(3), torch.arange(2)
        )


def test_quadrants_on_known_numbers():
    entropy = torch.tensor([0.0, 1.0, 2.0, 3.0])
    divergence = torch.tensor([0.0, 3.0, 1.0, 2.0])  # both medians are 1.5
    assert quadrants(entropy, divergence).tolist() == [4, 3, 2, 1]
    assert quadrants(entropy, divergence, entropy_quantile=0.0).tolist() == [2, 1, 2, 1]


def test_quadrants_partition_rows_at_the_per_batch_quantiles():
    stats = make_stats()
    quadrant = quadrants(stats.entropy, stats.divergence, 0.3, 0.8)
    high_entropy = stats.entropy >= torch.quantile(stats.entropy, 0.3)
    high_divergence = stats.divergence >= torch.quantile(stats.divergence, 0.8)
    expected = torch.where(
        high_entropy, torch.where(high_divergence, 1, 2), torch.where(high_divergence, 3, 4)
    )
    assert torch.equal(quadrant, expected)
    summary = selection_summary(stats, torch.arange(K))
    assert sum(summary[f"quadrant_fraction_q{q}"] for q in range(1, 5)) == pytest.approx(1.0)


def test_kept_count_rule():
    assert kept_count(0.5, 5) == 2  # Python round: halves go to even
    assert kept_count(0.3, K) == 11
    assert kept_count(0.01, K) == 1  # never nothing while rows remain
    assert kept_count(1.0, K) == K
    assert kept_count(0.0, K) == 0
    assert kept_count(0.5, 0) == 0


@pytest.mark.parametrize("name", FRACTION_SELECTORS)
@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("rows", [1, K])
def test_fraction_selectors_keep_exact_counts(name, p, rows):
    kept = select_tokens(make_stats(rows), SelectorConfig(name=name, p=p), seeded())
    assert kept.numel() == kept_count(p, rows)


@pytest.mark.parametrize("name", sorted(SELECTORS))
@pytest.mark.parametrize("before_first_error", [False, True])
def test_selections_are_sorted_unique_long_row_indices(name, before_first_error):
    config = SelectorConfig(name=name, before_first_error=before_first_error)
    kept = select_tokens(make_stats(), config, seeded())
    assert kept.dtype == torch.long
    assert (kept[1:] > kept[:-1]).all() and (kept >= 0).all() and (kept < K).all()
    assert select_tokens(make_stats(rows=0), config, seeded()).numel() == 0


def test_selector_table_covers_every_configurable_name():
    names = typing.get_args(SelectorConfig.model_fields["name"].annotation)
    assert set(SELECTORS) == set(names)


def test_entropy_topk_keeps_exactly_the_highest_entropy_rows():
    stats = make_stats()
    kept = select_tokens(stats, SelectorConfig(name="entropy_topk", p=0.3), seeded())
    expected = torch.argsort(stats.entropy, descending=True)[: kept_count(0.3, K)]
    assert kept.tolist() == sorted(expected.tolist())
    dropped = torch.ones(K, dtype=torch.bool)
    dropped[kept] = False
    assert stats.entropy[kept].min() > stats.entropy[dropped].max()


def test_divergence_topk_keeps_exactly_the_highest_divergence_rows():
    stats = make_stats()
    kept = select_tokens(stats, SelectorConfig(name="divergence_topk", p=0.5), seeded())
    expected = torch.argsort(stats.divergence, descending=True)[: kept_count(0.5, K)]
    assert kept.tolist() == sorted(expected.tolist())


def test_entropy_sample_with_alpha_zero_is_uniform():
    stats, draws = make_stats(), 2000
    config = SelectorConfig(name="entropy_sample", p=0.3, alpha=0.0)
    generator, counts = seeded(7), torch.zeros(K)
    for _ in range(draws):
        counts[select_tokens(stats, config, generator)] += 1
    expected = draws * kept_count(0.3, K) / K
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 80  # 36 degrees of freedom: mean 36, sd 8.5


def test_entropy_sample_draws_proportional_to_entropy_power_alpha():
    stats = TokenStats(
        entropy=torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0]),
        divergence=torch.zeros(5),
        sequence=torch.zeros(5, dtype=torch.long),
        offset=torch.arange(5),
    )
    config, generator, counts = SelectorConfig(name="entropy_sample", p=0.1), seeded(8), [0] * 5
    for _ in range(3000):
        (row,) = select_tokens(stats, config, generator).tolist()
        counts[row] += 1
    assert [count / 3000 for count in counts] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.0], abs=0.03)


def test_entropy_sample_with_large_alpha_equals_topk():
    stats = make_stats()
    topk = select_tokens(stats, SelectorConfig(name="entropy_topk", p=0.4), seeded())
    for seed in range(5):
        config = SelectorConfig(name="entropy_sample", p=0.4, alpha=1e4)
        assert torch.equal(select_tokens(stats, config, seeded(seed)), topk)


def test_entropy_sample_takes_zero_entropy_rows_only_when_needed():
    stats = make_stats()
    zero = torch.arange(K) % 5 == 0  # 8 rows
    stats = dataclasses.replace(stats, entropy=stats.entropy.masked_fill(zero, 0.0))
    positive = int((~zero).sum())
    for p, zero_rows in ((positive / K, 0), (1.0, int(zero.sum()))):
        kept = select_tokens(stats, SelectorConfig(name="entropy_sample", p=p), seeded())
        assert int(zero[kept].sum()) == zero_rows
    all_zero = dataclasses.replace(stats, entropy=torch.zeros(K))
    config = SelectorConfig(name="entropy_sample", p=0.3)
    draws = {tuple(select_tokens(all_zero, config, seeded(seed)).tolist()) for seed in range(5)}
    assert len(draws) == 5 and all(len(draw) == kept_count(0.3, K) for draw in draws)


def test_soft_or_on_known_numbers():
    stats = TokenStats(
        entropy=torch.tensor([0.0, 1.0, 2.0, 4.0]),  # normalised 0, 0.25, 0.5, 1
        divergence=torch.tensor([4.0, 0.0, 1.0, 2.0]),  # normalised 1, 0, 0.25, 0.5
        sequence=torch.zeros(4, dtype=torch.long),
        offset=torch.arange(4),
    )  # scores 1, 0.25, 0.625, 1
    for p, expected in ((0.5, [0, 3]), (0.75, [0, 2, 3])):
        kept = select_tokens(stats, SelectorConfig(name="soft_or", p=p), seeded())
        assert kept.tolist() == expected
    constant = dataclasses.replace(stats, divergence=torch.ones(4))
    kept = select_tokens(constant, SelectorConfig(name="soft_or", p=0.5), seeded())
    assert kept.tolist() == [2, 3]  # a constant divergence leaves entropy to decide


def test_type_aware_is_entropy_top_rows_plus_the_most_divergent_overconfident_rows():
    stats = TokenStats(
        entropy=torch.arange(10.0),  # median 4.5: rows 0-4 are low entropy
        divergence=torch.tensor([9.0, 1, 8, 2, 7, 0, 3, 5, 4, 6]),  # median 4.5
        sequence=torch.zeros(10, dtype=torch.long),
        offset=torch.arange(10),
    )  # quadrant 3 (low H, high D): rows 0, 2, 4 with divergence 9, 8, 7
    config = SelectorConfig(name="type_aware", p_entropy=0.3, p_overconfident=0.2)
    assert select_tokens(stats, config, seeded()).tolist() == [0, 2, 7, 8, 9]
    config = SelectorConfig(name="type_aware", p_entropy=0.0, p_overconfident=1.0)
    assert select_tokens(stats, config, seeded()).tolist() == [0, 2, 4]


def test_quadrants_selector_keeps_the_named_quadrants():
    stats = make_stats()
    kept = select_tokens(stats, SelectorConfig(name="quadrants", keep_quadrants=[3, 1]), seeded())
    quadrant = quadrants(stats.entropy, stats.divergence)
    assert kept.tolist() == torch.nonzero((quadrant == 1) | (quadrant == 3)).flatten().tolist()


@pytest.mark.parametrize("name", ["all", "random", "entropy_topk", "type_aware"])
def test_before_first_error_never_keeps_a_row_after_its_sequence_first_error(name):
    stats = make_stats(sequences=5, seed=3)
    error = stats.divergence >= torch.quantile(stats.divergence, 0.7)
    first_error = {}
    for row in range(K):
        sequence, offset = int(stats.sequence[row]), int(stats.offset[row])
        if error[row]:
            first_error[sequence] = min(offset, first_error.get(sequence, K))
    eligible = [
        row for row in range(K) if stats.offset[row] <= first_error.get(int(stats.sequence[row]), K)
    ]
    config = SelectorConfig(name=name, p=0.5, before_first_error=True, error_quantile=0.7)
    kept = select_tokens(stats, config, seeded()).tolist()
    assert set(kept) <= set(eligible) and len(eligible) < K
    if name == "all":
        assert kept == eligible  # first errors themselves stay in
    if name in FRACTION_SELECTORS:
        assert len(kept) == kept_count(0.5, len(eligible))


def test_selections_are_reproducible_from_the_generator_seed():
    stats = make_stats()
    for name in ("random", "entropy_sample"):
        config = SelectorConfig(name=name, p=0.3)
        first, again = (select_tokens(stats, config, seeded(11)) for _ in range(2))
        assert torch.equal(first, again)
        assert not torch.equal(first, select_tokens(stats, config, seeded(12)))


def test_selection_summary_is_json_ready_and_consistent():
    stats = make_stats()
    kept = select_tokens(stats, SelectorConfig(name="entropy_topk", p=0.5), seeded())
    loss = torch.rand(kept.numel(), generator=seeded(4))
    summary = selection_summary(stats, kept, per_token_loss=loss)
    assert json.loads(json.dumps(summary)) == summary
    assert all(type(value) is float for value in summary.values())
    assert summary["kept_fraction"] == kept.numel() / K
    for prefix in ("quadrant_fraction_q", "kept_quadrant_fraction_q", "loss_mass_q"):
        assert sum(summary[f"{prefix}{q}"] for q in range(1, 5)) == pytest.approx(1.0)
    quadrant = quadrants(stats.entropy, stats.divergence)[kept]
    assert summary["loss_mass_q1"] == pytest.approx((loss[quadrant == 1].sum() / loss.sum()).item())
    assert summary["mean_entropy_kept"] == pytest.approx(stats.entropy[kept].mean().item())
    assert "loss_mass_q1" not in selection_summary(stats, kept)
    assert sum(summary[f"loss_mass_decile_{d}"] for d in range(10)) == pytest.approx(1.0)


def test_loss_mass_by_position_decile_on_a_hand_example():
    stats = hand_stats()  # sequence 7: 4 positions (deciles 0, 2, 5, 7); sequence 2: 2 (0, 5)
    kept = torch.arange(6)
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # rows: offsets 3, 0, 1, 0, 1, 2
    summary = selection_summary(stats, kept, per_token_loss=loss)
    expected = {0: 2.0 + 4.0, 2: 3.0, 5: 6.0 + 5.0, 7: 1.0}
    for d in range(10):
        assert summary[f"loss_mass_decile_{d}"] == pytest.approx(expected.get(d, 0.0) / 21)


def test_selection_summary_rejects_foreign_indices():
    with pytest.raises(
        DistillInputError, match=r"kept must be 1-D integer row indices in \[0, 37\)"
    ):
        selection_summary(make_stats(), torch.tensor([0, K]))
    with pytest.raises(DistillInputError, match="per_token_loss must have one value per kept row"):
        selection_summary(make_stats(), torch.tensor([0, 1]), per_token_loss=torch.ones(3))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"p": 0.0}, "p\n  Input should be greater than 0"),
        ({"p": 1.5}, "p\n  Input should be less than or equal to 1"),
        ({"keep_quadrants": [2, 5]}, r"unknown quadrant\(s\) \[5\]"),
        ({"keep_quadrants": []}, "must name at least one quadrant"),
        ({"name": "type_aware", "p_entropy": 0, "p_overconfident": 0}, "type_aware keeps nothing"),
        ({"name": "entropy"}, "Input should be 'all', 'random'"),
        ({"topk": 3}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_selector_configs_fail_with_clear_messages(fields, match):
    with pytest.raises(ValidationError, match=match):
        SelectorConfig(**fields)


def test_invalid_stats_and_generator_raise_distill_input_errors():
    with pytest.raises(DistillInputError, match="TokenStats fields must be 1-D tensors"):
        TokenStats(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(3))
    with pytest.raises(DistillInputError, match="generator must be a torch"):
        select_tokens(make_stats(), SelectorConfig(name="random"), generator=0)
    with pytest.raises(DistillInputError, match="entropy_quantile must lie in"):
        quadrants(torch.zeros(3), torch.zeros(3), entropy_quantile=2)


def hand_stats():
    """Two responses, rows shuffled: sequence 7 has 4 positions, sequence 2 has 2."""
    return TokenStats(
        entropy=torch.ones(6),
        divergence=torch.tensor([0.2, 0.4, 0.0, 1.0, 0.5, 0.3]),
        sequence=torch.tensor([7, 2, 7, 7, 2, 7]),
        offset=torch.tensor([3, 0, 1, 0, 1, 2]),
    )


def test_first_fraction_keeps_the_first_positions_of_each_response():
    stats = hand_stats()
    # p = 0.5: 2 of the 4 positions of sequence 7 (offsets 0, 1), 1 of the 2 of sequence 2.
    kept = select_tokens(stats, SelectorConfig(name="first_fraction", p=0.5), seeded())
    assert kept.tolist() == [1, 2, 3]
    # p = 0.3: round(1.2) = 1 and max(1, round(0.6)) = 1: each response's first position.
    kept = select_tokens(stats, SelectorConfig(name="first_fraction", p=0.3), seeded())
    assert kept.tolist() == [1, 3]


def test_iw_opd_weights_on_a_hand_example():
    stats = dataclasses.replace(
        hand_stats(), log_ratio=torch.tensor([0.5, -1.0, 2.0, -1.0, 3.0, 1.5])
    )
    # Sequence 7 by offset: rows 3, 2, 5, 0 with |a| = 1, 2, 1.5, 0.5 (total 5): prefixes
    # 0, 1, 3, 4.5. Sequence 2: rows 1, 4 with |a| = 1, 3 (total 4): prefixes 0, 1.
    # w = 1 + 0.5 (1 - prefix / total).
    config = SelectorConfig(weighting="iw_opd", iw_opd_gamma=0.5)
    kept = torch.tensor([0, 1, 2, 3, 4, 5])
    expected = 1 + 0.5 * (1 - torch.tensor([4.5 / 5, 0 / 4, 1 / 5, 0 / 5, 1 / 4, 3 / 5]))
    torch.testing.assert_close(token_weights(stats, kept, config), expected.double())
    torch.testing.assert_close(
        token_weights(stats, torch.tensor([4, 0]), config), expected[[4, 0]].double()
    )
    assert torch.equal(token_weights(stats, kept, SelectorConfig()), torch.ones(6).double())
    with pytest.raises(DistillInputError, match="log-ratio"):
        token_weights(hand_stats(), kept, config)


def test_iw_opd_weights_agree_with_trls_iw_opd_loss():
    """TRL's IWOPDTrainer._compute_iw_opd_loss with our weights in place of its own."""
    trainer_module = pytest.importorskip("trl.experimental.iw_opd.iw_opd_trainer")
    generator = torch.Generator().manual_seed(0)
    batch, length, vocab = 3, 6, 11
    logits = torch.randn(batch, length, vocab, generator=generator, dtype=torch.float64)
    tokens = torch.randint(vocab, (batch, length), generator=generator)
    labels = tokens.clone()
    labels[0, 4:] = -100  # a shorter first response
    teacher = torch.randn(batch, length, generator=generator, dtype=torch.float64) - 2
    owner = types.SimpleNamespace(
        temperature=1.0,
        iw_opd_gamma=0.7,
        iw_opd_epsilon=1e-8,
        model=types.SimpleNamespace(training=True),
        _metrics={"train": collections.defaultdict(list)},
    )
    expected = trainer_module.IWOPDTrainer._compute_iw_opd_loss(
        owner, logits, tokens, labels, teacher
    )
    student = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    valid = labels != -100
    sequence, offset = torch.nonzero(valid, as_tuple=True)
    advantage = (teacher - student)[valid]
    stats = TokenStats(
        entropy=torch.ones(len(sequence)),
        divergence=torch.ones(len(sequence)),
        sequence=sequence,
        offset=offset,
        log_ratio=advantage,
    )
    config = SelectorConfig(weighting="iw_opd", iw_opd_gamma=0.7)
    weights = token_weights(stats, torch.arange(len(sequence)), config)
    ours = (-student[valid] * weights * advantage).sum() / valid.sum()
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)
