"""Direct preference optimisation and two of its variants, one function each.

Every loss takes per-sequence summed log-probabilities (N,) of the chosen and
rejected responses under the policy and under the frozen reference, and
returns (losses, chosen_rewards, rejected_rewards), each (N,) float32. The
implicit rewards beta * (log pi - log ref) are detached: they are for logging
(reward margins and accuracies), not for gradients.

    h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _log_ratios(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor
) -> tuple[Tensor, Tensor]:
    """(log pi(y_w) - log ref(y_w), log pi(y_l) - log ref(y_l)), each (N,) float32."""
    return policy_chosen.float() - ref_chosen.float(), policy_rejected.float() - ref_rejected.float()


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """DPO (Rafailov et al. 2023, eq. 7): loss = -log sigmoid(beta * h)."""
    chosen_log_ratio, rejected_log_ratio = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = -F.logsigmoid(beta * (chosen_log_ratio - rejected_log_ratio))
    return losses, (beta * chosen_log_ratio).detach(), (beta * rejected_log_ratio).detach()


def ipo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, tau: float
) -> tuple[Tensor, Tensor, Tensor]:
    """IPO (Azar et al. 2023): loss = (h - 1 / (2 * tau))^2.

    h is regressed to a finite target instead of pushed to infinity, so IPO does
    not overfit deterministic preferences. The implicit rewards use beta = tau.
    """
    chosen_log_ratio, rejected_log_ratio = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = (chosen_log_ratio - rejected_log_ratio - 1.0 / (2.0 * tau)) ** 2
    return losses, (tau * chosen_log_ratio).detach(), (tau * rejected_log_ratio).detach()


def conservative_dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    label_smoothing: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Conservative DPO (Mitchell 2023): DPO with labels flipped with probability eps.

        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    eps = label_smoothing in [0, 0.5); eps = 0 is `dpo_loss`.
    """
    chosen_log_ratio, rejected_log_ratio = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    logits = beta * (chosen_log_ratio - rejected_log_ratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, (beta * chosen_log_ratio).detach(), (beta * rejected_log_ratio).detach()
