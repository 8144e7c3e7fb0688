"""The RLHF math as pure tensor functions: masked statistics, GAE, PPO losses, KL, preference and DPO losses.

Imports only torch. Time is the last dimension; masks are True on real positions.
Both the language-model PPO recipe and the Gymnasium PPO recipe use this one copy.
"""

from rlhfkit.algorithms.advantages import generalized_advantage_estimation, masked_gae
from rlhfkit.algorithms.aggregation import share_weight
from rlhfkit.algorithms.core import explained_variance, masked_mean, masked_var, whiten
from rlhfkit.algorithms.dpo import conservative_dpo_loss, dpo_loss, ipo_loss
from rlhfkit.algorithms.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_shaped_rewards,
)
from rlhfkit.algorithms.policy import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    kl_penalty_policy_loss,
    logprobs_from_logits,
    update_kl_penalty_beta,
)
from rlhfkit.algorithms.ppo_update import ppo_epochs
from rlhfkit.algorithms.preference import (
    best_of_k_loss,
    bradley_terry_loss,
    preference_accuracy,
    ranking_loss,
    soft_bradley_terry_loss,
)
from rlhfkit.algorithms.running import RunningMeanStd

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "RunningMeanStd",
    "best_of_k_loss",
    "bradley_terry_loss",
    "clipped_policy_loss",
    "clipped_value_loss",
    "conservative_dpo_loss",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "generalized_advantage_estimation",
    "ipo_loss",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalty_policy_loss",
    "kl_shaped_rewards",
    "logprobs_from_logits",
    "masked_gae",
    "masked_mean",
    "masked_var",
    "ppo_epochs",
    "preference_accuracy",
    "ranking_loss",
    "share_weight",
    "soft_bradley_terry_loss",
    "update_kl_penalty_beta",
    "whiten",
]
