"""Ranking losses against closed forms; masked entries change neither value nor gradient."""

import numpy as np
import pytest
import torch

from winnow.search.losses import LOSSES, listwise_softmax_loss, pointwise_mse_loss


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
