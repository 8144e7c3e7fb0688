"""KL to the reference policy: per-token estimators, the KL-shaped reward, and the coefficient's controllers.

The estimators follow Schulman's note "Approximating KL divergence" (2020):
with x ~ pi and r = ref(x) / pi(x), each is an estimate of KL(pi || ref).

    k1 = -log r                 unbiased, high variance, negative on some samples
    k2 = (log r)^2 / 2          biased, low variance, always >= 0
    k3 = (r - 1) - log r        unbiased, low variance, always >= 0

All take per-token log-probabilities (..., T) of the sampled tokens and return (..., T).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log pi(x) - log ref(x), x ~ pi."""
    return logprobs.float() - ref_logprobs.float()


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = (log pi(x) - log ref(x))^2 / 2, x ~ pi."""
    return 0.5 * (logprobs.float() - ref_logprobs.float()) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = exp(log ref(x) - log pi(x)) - 1 - (log ref(x) - log pi(x)), x ~ pi."""
    log_ratio = ref_logprobs.float() - logprobs.float()
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_shaped_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    kl_coef: float,
    estimator: Callable[[Tensor, Tensor], Tensor] = kl_k1,
) -> tuple[Tensor, Tensor]:
    """Per-token rewards for PPO on a language model (Ziegler et al. 2019, Stiennon et al. 2020).

        R_t = -beta * KL_t + [t is the last real token] * score

    scores: (B,); logprobs, ref_logprobs, response_mask: (B, T). Returns
    (rewards, kl), both (B, T) float32 and 0 where response_mask is False; kl is
    the per-token estimate by `estimator`. A row with no real token (an empty
    response) gets neither a KL penalty nor its score: all its rewards are 0.
    """
    mask = response_mask.bool()
    kl = torch.where(mask, estimator(logprobs, ref_logprobs), 0.0)
    positions = torch.arange(mask.shape[-1], device=mask.device)
    last_index = torch.where(mask, positions, -1).amax(dim=-1, keepdim=True)  # (B, 1), -1 for an empty row
    is_last = positions == last_index  # (B, T)
    rewards = -kl_coef * kl + torch.where(is_last, scores.float().unsqueeze(-1), 0.0)
    return rewards, kl


class FixedKLController:
    """A constant KL coefficient, with the same interface as `AdaptiveKLController`."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019's proportional controller, steering the observed KL towards a target.

        e_t         = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_{t+1}  = beta_t * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    n_steps is the number of samples (episodes) behind KL_t; horizon sets how
    many samples a full 20% correction takes to apply.
    """

    def __init__(self, init_value: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController needs target > 0 and horizon > 0, got target={target}, horizon={horizon}"
            )
        self.value = float(init_value)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
