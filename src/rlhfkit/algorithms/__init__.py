"""The RLHF math as pure tensor functions: masked statistics, GAE, PPO losses, KL, preference and DPO losses.

Imports only torch. Time is the last dimension; masks are True on real positions.
Both the language-model PPO recipe and the Gymnasium PPO recipe use this one copy.
"""

from rlhfkit.algorithms.advantages import generalized_advantage_estimation, masked_gae
from rlhfkit.algorithms.aggregation import share_weight
from rlhfkit.algorithms.core import explained_variance, masked_mean, masked_var, whiten
from rlhfkit.algorithms.critic_free import (
    LOSS_AGGREGATIONS,
    LossAggregation,
    broadcast_over_tokens,
    constant_normalizer,
    grpo_advantages,
    kl_loss,
    policy_gradient_loss,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    reward_to_go,
    rloo_advantages,
    sequence_mean_token_mean,
    token_mean,
)
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
    PolicySample,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    kl_penalty_policy_loss,
    logprobs_and_entropy,
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
from rlhfkit.algorithms.trust_region import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_operator,
    fisher_vector_product,
    flat_grad,
    natural_gradient_step,
)

__all__ = [
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdaptiveKLController",
    "FixedKLController",
    "LossAggregation",
    "PolicySample",
    "RunningMeanStd",
    "backtracking_line_search",
    "best_of_k_loss",
    "bradley_terry_loss",
    "broadcast_over_tokens",
    "clipped_policy_loss",
    "clipped_value_loss",
    "conjugate_gradient",
    "conservative_dpo_loss",
    "constant_normalizer",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "fisher_vector_operator",
    "fisher_vector_product",
    "flat_grad",
    "generalized_advantage_estimation",
    "grpo_advantages",
    "ipo_loss",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_loss",
    "kl_penalty_policy_loss",
    "kl_shaped_rewards",
    "logprobs_and_entropy",
    "logprobs_from_logits",
    "masked_gae",
    "masked_mean",
    "masked_var",
    "natural_gradient_step",
    "policy_gradient_loss",
    "ppo_epochs",
    "preference_accuracy",
    "ranking_loss",
    "reinforce_plus_plus_advantages",
    "reinforce_plus_plus_baseline_advantages",
    "reward_to_go",
    "rloo_advantages",
    "sequence_mean_token_mean",
    "share_weight",
    "soft_bradley_terry_loss",
    "token_mean",
    "update_kl_penalty_beta",
    "whiten",
]
