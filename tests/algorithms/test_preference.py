import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.algorithms import (
    best_of_k_loss,
    bradley_terry_loss,
    preference_accuracy,
    ranking_loss,
    soft_bradley_terry_loss,
)

LOG_1P_EXP_M1 = math.log(1 + math.exp(-1))  # -log sigmoid(1) = 0.3132617


def test_bradley_terry_by_hand():
    # r_w = 1, r_l = 0: log(1 + e^-1) ; r_w = 0, r_l = 1: log(1 + e) = 1.3132617
    losses = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert losses.tolist() == pytest.approx([LOG_1P_EXP_M1, math.log(1 + math.e)], abs=1e-6)


def test_bradley_terry_margin():
    # margin 0.5: -log sigmoid(1 - 0.5) = log(1 + e^-0.5) = 0.4740770 ; margin 0 changes nothing
    losses = bradley_terry_loss(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), margin=torch.tensor([0.5, 0.0]))
    assert losses.tolist() == pytest.approx([0.4740770, LOG_1P_EXP_M1], abs=1e-6)
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=0.5).item() == pytest.approx(
        0.4740770, abs=1e-6
    )


def test_soft_bradley_terry():
    chosen, rejected = torch.tensor([1.0, -0.3]), torch.tensor([0.0, 0.4])
    torch.testing.assert_close(soft_bradley_terry_loss(chosen, rejected, 1.0), bradley_terry_loss(chosen, rejected))
    # p = 0.5, d = 1: 0.5 * (log(1 + e^-1) + log(1 + e)) = 0.8132617
    assert soft_bradley_terry_loss(
        torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5])
    ).item() == pytest.approx(0.8132617, abs=1e-6)


def test_ranking_loss_with_two_responses_is_bradley_terry():
    g = torch.Generator().manual_seed(9)
    rewards = torch.randn(5, 2, generator=g)
    torch.testing.assert_close(
        ranking_loss(rewards, torch.full((5,), 2)), bradley_terry_loss(rewards[:, 0], rewards[:, 1])
    )


def test_ranking_loss_three_responses_by_hand_and_padding_ignored():
    rewards = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, float("nan")]])
    # row 0, pairs (0,1) d=1, (0,2) d=2, (1,2) d=1:
    #   (log(1+e^-1) + log(1+e^-2) + log(1+e^-1)) / 3 = (0.3132617 + 0.1269280 + 0.3132617) / 3 = 0.2511505
    # row 1, K=2: only (0,1), the NaN pad is ignored: log(1 + e^-1)
    losses = ranking_loss(rewards.clone().requires_grad_(True), torch.tensor([3, 2]))
    assert losses.tolist() == pytest.approx([0.2511505, LOG_1P_EXP_M1], abs=1e-6)
    grad_input = rewards.clone().requires_grad_(True)
    ranking_loss(grad_input, torch.tensor([3, 2])).sum().backward()
    assert torch.isfinite(grad_input.grad).all() and grad_input.grad[1, 2] == 0


def test_ranking_loss_rejects_bad_counts():
    with pytest.raises(ValueError, match="num_responses"):
        ranking_loss(torch.zeros(2, 3), torch.tensor([3, 1]))


def test_best_of_k_matches_cross_entropy():
    rewards = torch.tensor([[1.0, 2.0, 0.5], [1.0, 2.0, 99.0]])
    # row 0: log(e^1 + e^2 + e^0.5) - 2 ; row 1 (K=2, pad 99 ignored), best 0: log(e + e^2) - 1 = 1.3132617
    losses = best_of_k_loss(rewards, best=torch.tensor([1, 0]), num_responses=torch.tensor([3, 2]))
    assert losses[0].item() == pytest.approx(math.log(math.e + math.e**2 + math.e**0.5) - 2, abs=1e-6)
    assert losses[0].item() == pytest.approx(F.cross_entropy(rewards[:1], torch.tensor([1])).item(), abs=1e-6)
    assert losses[1].item() == pytest.approx(F.cross_entropy(rewards[1:, :2], torch.tensor([0])).item(), abs=1e-6)
    assert losses[1].item() == pytest.approx(1.3132617, abs=1e-6)
    with pytest.raises(ValueError, match="best"):
        best_of_k_loss(rewards, best=torch.tensor([1, 2]), num_responses=torch.tensor([3, 2]))


def test_preference_accuracy_counts_ties_as_wrong():
    assert preference_accuracy(torch.tensor([1.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0, -1.0])).item() == 0.5
