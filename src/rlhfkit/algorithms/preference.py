"""Reward-model losses: pairwise comparisons, K-way rankings and best-of-K choices.

Each loss returns one value per comparison, pair set or choice (N,), in
float32; the caller averages (or weights) them. Scalar rewards come from the
reward model; under Bradley-Terry, P(w beats l) = sigmoid(r_w - r_l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float | None = None
) -> Tensor:
    """Negative log-likelihood of the preferred response under Bradley-Terry (Stiennon et al. 2020).

        loss = -log sigmoid(r_w - r_l - m)

    chosen_rewards, rejected_rewards: (N,); margin: (N,), a number, or None (0).
    A margin (Llama 2) asks the chosen reward to lead by at least m.
    """
    difference = chosen_rewards.float() - rejected_rewards.float()
    if margin is not None:
        difference = difference - torch.as_tensor(margin, dtype=torch.float32, device=difference.device)
    return -F.logsigmoid(difference)


def soft_bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, prob_chosen: Tensor | float) -> Tensor:
    """Bradley-Terry cross-entropy against a soft label, for AI feedback with a preference probability.

        loss = -(p * log sigmoid(d) + (1 - p) * log sigmoid(-d)),   d = r_w - r_l

    chosen_rewards, rejected_rewards: (N,); prob_chosen: (N,) or a number in [0, 1].
    p = 1 is `bradley_terry_loss`.
    """
    difference = chosen_rewards.float() - rejected_rewards.float()
    prob = torch.as_tensor(prob_chosen, dtype=torch.float32, device=difference.device)
    return -(prob * F.logsigmoid(difference) + (1.0 - prob) * F.logsigmoid(-difference))


def _response_slots(num_responses: Tensor, max_responses: int) -> Tensor:
    """(N, K_max) bool, True on the first num_responses[n] slots of row n."""
    return torch.arange(max_responses, device=num_responses.device) < num_responses.unsqueeze(-1)


def ranking_loss(rewards: Tensor, num_responses: Tensor) -> Tensor:
    """InstructGPT's K-way ranking loss (Ouyang et al. 2022, eq. 1), one value per prompt.

        loss = -1 / C(K, 2) * sum_{i < j} log sigmoid(r_i - r_j)

    rewards: (N, K_max), each row ordered best to worst, padded beyond
    num_responses (N,) with anything (even NaN). Every prompt's pairs weigh 1
    in total, so a prompt with many responses does not dominate the batch (the
    paper's fix for overfitting). K = 2 is `bradley_terry_loss`.
    """
    num_responses = num_responses.long()
    max_responses = rewards.shape[-1]
    if bool(((num_responses < 2) | (num_responses > max_responses)).any()):
        raise ValueError(f"ranking_loss: num_responses must lie in [2, {max_responses}], got {num_responses.tolist()}")
    real = _response_slots(num_responses, max_responses)
    rewards = torch.where(real, rewards.float(), 0.0)
    slots = torch.arange(max_responses, device=rewards.device)
    pairs = (slots.unsqueeze(-1) < slots) & real.unsqueeze(-2)  # (N, K, K): i < j < K_n
    differences = rewards.unsqueeze(-1) - rewards.unsqueeze(-2)  # (N, K, K): r_i - r_j
    pair_losses = torch.where(pairs, -F.logsigmoid(differences), 0.0)
    num_pairs = num_responses * (num_responses - 1) / 2
    return pair_losses.sum(dim=(-2, -1)) / num_pairs


def best_of_k_loss(rewards: Tensor, best: Tensor, num_responses: Tensor) -> Tensor:
    """Ziegler et al. 2019's choice loss: the labeller picked `best` among K responses.

        loss = -log( exp(r_best) / sum_{i < K} exp(r_i) )

    rewards: (N, K_max), padded beyond num_responses (N,) with anything; best: (N,)
    index of the chosen response. Returns (N,).
    """
    num_responses = num_responses.long()
    best = best.long()
    if bool(((best < 0) | (best >= num_responses)).any()):
        raise ValueError(
            f"best_of_k_loss: best must lie in [0, num_responses), "
            f"got best={best.tolist()}, num_responses={num_responses.tolist()}"
        )
    logits = torch.where(_response_slots(num_responses, rewards.shape[-1]), rewards.float(), -torch.inf)
    return torch.logsumexp(logits, dim=-1) - logits.gather(-1, best.unsqueeze(-1)).squeeze(-1)


def preference_accuracy(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Fraction of pairs (N,) where the chosen reward is strictly higher (a tie counts as wrong), 0-dim."""
    return (chosen_rewards > rejected_rewards).float().mean()
