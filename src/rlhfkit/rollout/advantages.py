"""Step 4 of an iteration without a critic: GRPO, RLOO, REINFORCE++ advantages of the whole batch.

The estimators (`rlhfkit.algorithms.critic_free`) replace the critic's baseline with statistics
of the scores: a group's mean (and std) for the group estimators, the batch's mean and std for
REINFORCE++. Both must be those of the global batch that every process's rows make up, or N
processes would train a different algorithm than one. Prompts are sharded, not responses, so a
process always holds whole groups; REINFORCE++'s whitening still needs every process's tokens.
So the estimators here run on every process's rows (`gather`, cheap next to sampling), and each
process keeps its own rows: one code path, exact for every estimator under any number of processes.

How the KL to the reference enters (`AdvantageSpec.kl_coef`, 0 when the KL is a loss term):
REINFORCE++ takes it per token in the reward, as GAE does; GRPO and RLOO compare whole responses,
so they take the KL-shaped return of each response, score - β·Σ_t KL_t (as TRL's RLOO does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from rlhfkit.algorithms import (
    broadcast_over_tokens,
    grpo_advantages,
    kl_shaped_rewards,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    rloo_advantages,
)

KLEstimator = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class AdvantageSpec:
    """Which advantage step 4 computes and with what: the part of the configuration the rollout reads."""

    estimator: str  # gae, grpo, rloo, reinforce++ or reinforce++-baseline
    kl_coef: float  # β of the per-token -β·KL reward; 0 when the KL is a loss term instead
    kl_estimator: KLEstimator  # per-token KL estimate in the reward (k1, k2 or k3)
    gamma: float = 1.0  # GAE's discount
    lam: float = 0.95  # GAE's λ
    group_size: int = 1  # K: responses per prompt, consecutive rows
    scale_by_std: bool = True  # GRPO divides by the group's std (False: Dr. GRPO)

    @property
    def critic_free(self) -> bool:
        return self.estimator != "gae"


@dataclass
class ScoredBatch:
    """Every process's responses: scores (N,), and log-probs, reference log-probs, response_mask (N, T)."""

    scores: Tensor
    logprobs: Tensor
    ref_logprobs: Tensor
    response_mask: Tensor

    def shaped_scores(self, spec: AdvantageSpec) -> Tensor:
        """(N,) the KL-shaped return of each whole response: score - β·Σ_t KL_t (the score when β = 0)."""
        rewards, _ = kl_shaped_rewards(
            self.scores, self.logprobs, self.ref_logprobs, self.response_mask, spec.kl_coef, spec.kl_estimator
        )
        return rewards.sum(-1)


def _grpo(batch: ScoredBatch, spec: AdvantageSpec) -> Tensor:
    advantages = grpo_advantages(batch.shaped_scores(spec), spec.group_size, spec.scale_by_std)
    return broadcast_over_tokens(advantages, batch.response_mask)


def _rloo(batch: ScoredBatch, spec: AdvantageSpec) -> Tensor:
    return broadcast_over_tokens(rloo_advantages(batch.shaped_scores(spec), spec.group_size), batch.response_mask)


def _reinforce_plus_plus(batch: ScoredBatch, spec: AdvantageSpec) -> Tensor:
    return reinforce_plus_plus_advantages(
        batch.scores, batch.logprobs, batch.ref_logprobs, batch.response_mask, spec.kl_coef, spec.kl_estimator
    )


def _reinforce_plus_plus_baseline(batch: ScoredBatch, spec: AdvantageSpec) -> Tensor:
    return reinforce_plus_plus_baseline_advantages(
        batch.scores, batch.logprobs, batch.ref_logprobs, batch.response_mask,
        spec.group_size, spec.kl_coef, spec.kl_estimator,
    )  # fmt: skip


# algorithm.advantage -> (every process's batch, spec) -> (N, T) advantages, 0 on padding
CRITIC_FREE_ESTIMATORS: dict[str, Callable[[ScoredBatch, AdvantageSpec], Tensor]] = {
    "grpo": _grpo,
    "rloo": _rloo,
    "reinforce++": _reinforce_plus_plus,
    "reinforce++-baseline": _reinforce_plus_plus_baseline,
}
ADVANTAGE_ESTIMATORS = ("gae", *CRITIC_FREE_ESTIMATORS)
GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce++-baseline")  # compare the K responses to one prompt


def critic_free_advantages(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    spec: AdvantageSpec,
    gather: Callable[[Tensor], Tensor],
    rank: int,
) -> Tensor:
    """This process's (B, T) advantages by `spec.estimator`, computed over every process's rows.

    scores (B,) and the (B, T) tensors are this process's rows, whole groups of K consecutive rows;
    `gather` concatenates the processes' rows in process order (right-padding T), so this process's
    rows of the result are rank·B ... rank·B + B - 1, their first T columns.
    """
    rows, columns = response_mask.shape
    batch = ScoredBatch(
        gather(scores.float().unsqueeze(1)).squeeze(1), gather(logprobs), gather(ref_logprobs), gather(response_mask)
    )
    advantages = CRITIC_FREE_ESTIMATORS[spec.estimator](batch, spec)
    return advantages[rank * rows : (rank + 1) * rows, :columns]


__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "CRITIC_FREE_ESTIMATORS",
    "GROUP_ESTIMATORS",
    "AdvantageSpec",
    "critic_free_advantages",
]
