import math

import pytest
import torch

from rlhfkit.algorithms import conservative_dpo_loss, dpo_loss, ipo_loss

# One pair: log-ratios chosen -10 - (-11) = 1, rejected -12 - (-11) = -1, so h = 2.
PAIR = (torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]))


def test_dpo_by_hand():
    # beta 0.1: -log sigmoid(0.2) = log(1 + e^-0.2) = 0.5981389 ; rewards 0.1 * 1, 0.1 * -1
    losses, chosen, rejected = dpo_loss(*PAIR, beta=0.1)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-6)
    assert losses.item() == pytest.approx(0.5981389, abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.1, -0.1), abs=1e-6)


def test_dpo_gradient_pushes_chosen_up():
    policy_chosen = PAIR[0].clone().requires_grad_(True)
    losses, chosen_rewards, _ = dpo_loss(policy_chosen, *PAIR[1:], beta=0.1)
    losses.sum().backward()
    # d/dpc = -beta * sigmoid(-beta h) = -0.1 * sigmoid(-0.2) = -0.1 * 0.4501660
    assert policy_chosen.grad.item() == pytest.approx(-0.0450166, abs=1e-6)
    assert not chosen_rewards.requires_grad


def test_ipo_by_hand():
    # tau 0.1: (h - 1/(2*0.1))^2 = (2 - 5)^2 = 9 ; rewards use beta = tau
    losses, chosen, rejected = ipo_loss(*PAIR, tau=0.1)
    assert losses.item() == pytest.approx(9.0, abs=1e-5)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.1, -0.1), abs=1e-6)


def test_conservative_dpo_by_hand_and_zero_smoothing_is_dpo():
    # eps 0.1: 0.9 * log(1 + e^-0.2) + 0.1 * log(1 + e^0.2) = 0.9 * 0.5981389 + 0.1 * 0.7981389 = 0.6181389
    losses, _, _ = conservative_dpo_loss(*PAIR, beta=0.1, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.6181389, abs=1e-6)
    g = torch.Generator().manual_seed(10)
    batch = tuple(torch.randn(6, generator=g) * 5 for _ in range(4))
    for got, want in zip(conservative_dpo_loss(*batch, beta=0.3, label_smoothing=0.0), dpo_loss(*batch, beta=0.3)):
        torch.testing.assert_close(got, want)
