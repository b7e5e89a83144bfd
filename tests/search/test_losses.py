"""Ranking losses against closed forms; masked entries change neither value nor gradient."""

import numpy as np
import pytest
import torch

from winnow.search.losses import (
    LOSSES,
    TARGET_NORMS,
    listwise_softmax_loss,
    pointwise_mse_loss,
    standardize_scores,
)


def test_listwise_loss_closed_form_and_masking():
    scores = torch.tensor([[2.0, 0.5, -1.0, 9.0]], requires_grad=True)
    targets = torch.tensor([[3.0, 1.0, 0.0, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss = listwise_softmax_loss(scores, targets, mask, temperature=0.5)
    p = np.exp([6.0, 2.0, 0.0]) / np.exp([6.0, 2.0, 0.0]).sum()
    log_q = np.array([2.0, 0.5, -1.0]) - np.log(np.exp([2.0, 0.5, -1.0]).sum())
    assert loss.item() == pytest.approx(-(p * log_q).sum(), rel=1e-6)
    loss.sum().backward()
    assert scores.grad[0, 3] == 0
    np.testing.assert_allclose(scores.grad[0, :3], np.exp(log_q) - p, rtol=1e-5, atol=1e-7)
    moved = listwise_softmax_loss(
        torch.tensor([[2.0, 0.5, -1.0, -50.0]]), torch.tensor([[3.0, 1.0, 0.0, 0.0]]), mask, 0.5
    )
    assert moved.item() == pytest.approx(loss.item(), rel=1e-7)


def test_mse_loss_closed_form_and_masking():
    scores = torch.tensor([[1.0, 0.0, 7.0], [0.5, 0.5, 0.5]])
    targets = torch.tensor([[0.5, 1.0, -3.0], [0.0, 1.0, 0.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    expected = [(0.25 + 1.0) / 2, (0.25 + 0.25 + 0.0) / 3]
    np.testing.assert_allclose(pointwise_mse_loss(scores, targets, mask), expected, rtol=1e-6)


def test_losses_share_one_signature():
    scores = torch.zeros((2, 3), requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    for loss in LOSSES.values():
        values = loss(scores, torch.ones((2, 3)), mask, 0.5)
        assert values.shape == (2,) and values[1] == 0  # an empty list contributes nothing


def test_standardize_scores_per_row_over_the_mask():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.normal(3.0, 0.6, size=(4, 7)))
    mask = torch.tensor(rng.random((4, 7)) < 0.7)
    mask[:, :2] = True
    out = standardize_scores(scores, mask)
    for row in range(4):
        kept = out[row][mask[row]].numpy()
        assert kept.mean() == pytest.approx(0.0, abs=1e-12)
        assert kept.std() == pytest.approx(1.0, rel=1e-4)  # population sd; eps = 1e-6
        expected = scores[row][mask[row]].numpy()
        np.testing.assert_allclose(kept, (expected - expected.mean()) / (expected.std() + 1e-6))
    torch.testing.assert_close(out[~mask], scores[~mask])  # masked entries untouched
    moved = scores.clone()
    moved[~mask] = torch.nan  # and ignored
    torch.testing.assert_close(standardize_scores(moved, mask)[mask], out[mask])


def test_standardize_scores_is_nan_free_on_degenerate_rows():
    scores = torch.tensor([[2.0, 5.0, 7.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[True, False, False], [True, True, True], [False, False, False]])
    out = standardize_scores(scores, mask)
    assert torch.isfinite(out).all()
    assert out[0, 0] == 0 and (out[1] == 0).all()  # one entry, zero spread: zeros
    torch.testing.assert_close(out[2], scores[2])
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("name", list(LOSSES))
def test_standardized_targets_ignore_a_teachers_offset_and_scale(name):
    rng = np.random.default_rng(1)
    scores = torch.tensor(rng.normal(size=(3, 6)))
    teacher = torch.tensor(rng.normal(size=(3, 6)))
    mask = torch.tensor(rng.random((3, 6)) < 0.8)
    mask[:, :2] = True
    norm = TARGET_NORMS["standardize"]
    base = LOSSES[name](scores, norm(teacher, mask), mask, 0.5)
    for a, b in ((0.1, -4.0), (25.0, 3.0)):
        moved = LOSSES[name](scores, norm(a * teacher + b, mask), mask, 0.5)
        # eps = 1e-6 in the denominator moves the targets by about eps / (a * sd) <= 1e-5
        torch.testing.assert_close(moved, base, rtol=1e-4, atol=1e-4)
    raw = LOSSES[name](scores, TARGET_NORMS["none"](25.0 * teacher, mask), mask, 0.5)
    assert not torch.allclose(raw, base)  # without it, the teacher's scale matters
