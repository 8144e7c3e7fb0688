"""Generalised advantage estimation (Schulman et al. 2016), one implementation for every recipe.

The Gymnasium recipe calls `generalized_advantage_estimation` with explicit
termination and episode-end flags; the language-model recipe calls
`masked_gae`, which treats each response as one episode that ends on its last
real token. Time is the last dimension everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor


def generalized_advantage_estimation(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_end: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) over a rollout whose episodes may end by termination or by truncation.

        delta_t = r_t + gamma * V(s_{t+1}) * (1 - terminated_t) - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - episode_end_t) * A_{t+1}
        R_t     = A_t + V(s_t)

    All inputs are (..., T); both outputs (advantages, returns) are (..., T) float32.
    next_values_t is V(s_{t+1}): values shifted by one inside an episode, and at
    an episode end V of the observation the episode ended in. terminated_t is
    True when s_{t+1} is terminal, so nothing is bootstrapped (next_values_t is
    then ignored, even if NaN). episode_end_t is True when the episode ends at
    step t, by termination or by truncation, so the recursion does not carry
    A_{t+1} across it. A truncated step (episode_end & ~terminated) thus still
    bootstraps from V(final observation), as Stable-Baselines3 does; treating
    truncation as termination would teach the critic that time limits are
    terminal states.
    """
    shape = rewards.shape
    for name, tensor in (
        ("values", values),
        ("next_values", next_values),
        ("terminated", terminated),
        ("episode_end", episode_end),
    ):
        if tensor.shape != shape:
            raise ValueError(
                f"generalized_advantage_estimation: {name} has shape {tuple(tensor.shape)}, rewards {tuple(shape)}"
            )
    values = values.float()
    bootstrap = torch.where(terminated.bool(), 0.0, next_values.float())
    deltas = rewards.float() + gamma * bootstrap - values
    carry_weights = gamma * lam * (~episode_end.bool()).float()

    advantage = torch.zeros_like(deltas[..., 0])
    advantages_reversed = []
    for t in reversed(range(shape[-1])):
        advantage = deltas[..., t] + carry_weights[..., t] * advantage
        advantages_reversed.append(advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=-1)
    return advantages, advantages + values


def masked_gae(
    rewards: Tensor, values: Tensor, response_mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE for language-model responses: one episode per row, ending on its last real token.

    rewards, values, response_mask: (B, T); returns (advantages, returns), each (B, T).
    response_mask is True on real response tokens (a prefix of each row; tokens
    after EOS are False). Each row's last real token is terminal: the score sits
    in its reward, and nothing is bootstrapped beyond it (Ziegler et al. 2019).
    Within a row V(s_{t+1}) is simply the next token's value. Rewards and values
    at masked-out positions are ignored, and advantages and returns are 0 there.
    (A mask made of several runs of True is treated as one episode per run.)
    """
    mask = response_mask.bool()
    rewards = torch.where(mask, rewards.float(), 0.0)
    values = torch.where(mask, values.float(), 0.0)
    next_is_real = torch.cat([mask[..., 1:], torch.zeros_like(mask[..., :1])], dim=-1)
    last_real = mask & ~next_is_real
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    advantages, returns = generalized_advantage_estimation(
        rewards, values, next_values, terminated=last_real, episode_end=last_real, gamma=gamma, lam=lam
    )
    return torch.where(mask, advantages, 0.0), torch.where(mask, returns, 0.0)
