"""The reward model of `reward.kind=preferences`: an ensemble of MLPs r(o, a) fitted by Bradley-Terry to comparisons.

Christiano et al. (2017): each member predicts a reward per step; a segment's predicted return is
the sum over its steps, and P(first preferred) = sigmoid(R_1 - R_2). The members are fitted on
their own bootstrap minibatches, so that they disagree where the labels say little.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from rlhfkit.algorithms.preference import soft_bradley_terry_loss

if TYPE_CHECKING:
    from rlhfkit.gym.preferences import Comparisons


def reward_features(observations: Tensor, actions: Tensor, action_space: spaces.Discrete | spaces.Box) -> Tensor:
    """(..., obs_dim) observations and the policy's actions -> (..., obs_dim + action_dim) inputs of r(o, a).

    A Discrete action becomes its one-hot vector; a Box action the one the environment executed
    (clipped to its bounds).
    """
    if isinstance(action_space, spaces.Discrete):
        action_features = F.one_hot(actions.long(), int(action_space.n)).float()
    else:
        low = torch.as_tensor(action_space.low.reshape(-1), dtype=torch.float32)
        high = torch.as_tensor(action_space.high.reshape(-1), dtype=torch.float32)
        action_features = torch.minimum(torch.maximum(actions.float(), low), high)
    return torch.cat([observations.float(), action_features], -1)


class RewardEnsemble(nn.Module):
    """`members` independent MLPs r_m(o, a) with leaky-ReLU hidden layers (the paper's MuJoCo predictor)."""

    def __init__(self, input_dim: int, hidden_sizes: list[int], members: int):
        super().__init__()
        sizes = [input_dim, *hidden_sizes, 1]
        self.members = nn.ModuleList(_leaky_mlp(sizes) for _ in range(members))

    def forward(self, features: Tensor) -> Tensor:
        """(..., F) -> (M, ...): every member's reward for every step."""
        return torch.stack([member(features).squeeze(-1) for member in self.members])


def _leaky_mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.01)]
    return nn.Sequential(*layers[:-1])


def fit_reward_model(
    ensemble: RewardEnsemble, optimizer: torch.optim.Optimizer, comparisons: Comparisons, steps: int, batch_size: int
) -> float:
    """`steps` Adam steps of the Bradley-Terry loss on segment returns; returns the mean loss over them.

        loss_m = mean over its minibatch of -(p log sigmoid(R_1 - R_2) + (1 - p) log sigmoid(R_2 - R_1)),
        R = the sum of r_m(o, a) over a segment's steps

    Each member draws its own minibatch of comparisons with replacement, so the members see
    different bootstrap samples of the labels and disagree where the labels say little.
    """
    members = len(ensemble.members)
    total = 0.0
    for _ in range(steps):
        picks = torch.randint(len(comparisons), (members, batch_size))  # (M, B)
        features = comparisons.features[picks]  # (M, B, 2, L, F)
        returns = torch.stack([member(features[m]).squeeze(-1).sum(-1) for m, member in enumerate(ensemble.members)])
        losses = soft_bradley_terry_loss(returns[..., 0], returns[..., 1], comparisons.prob_first[picks])  # (M, B)
        loss = losses.mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() / members
    return total / steps


def agreement(predicted_first: Tensor, predicted_second: Tensor, prob_first: Tensor) -> float | None:
    """Share of the decided comparisons (label not 0.5) whose higher predicted return is the preferred one."""
    decided = prob_first != 0.5
    if not decided.any():
        return None
    right = (predicted_first > predicted_second) == (prob_first > 0.5)
    return float(right[decided].float().mean())


def correlation(x: Tensor, y: Tensor) -> float | None:
    """Pearson correlation of two equally long tensors (None where either is constant)."""
    x, y = x.flatten().double(), y.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    scale = float(x.norm() * y.norm())
    return float((x * y).sum()) / scale if scale > 0 else None
