"""Policy optimisation without a value model: GRPO, RLOO, REINFORCE++, the loss reductions and the KL loss they use.

Each estimator replaces the critic's baseline by one computed from the scores themselves, and
feeds the same clipped update as PPO (`clipped_policy_loss`). The group estimators sample K
responses per prompt; their `scores` (B,) hold the K responses of a prompt in consecutive rows,
B = num_prompts * K, so a group's statistics are exact as long as a process holds whole groups.
Sequence-level advantages (B,) reach the tokens through `broadcast_over_tokens`.

The loss reductions differ in how a token is weighted when responses differ in length; each is
named after the paper that uses it, and `LOSS_AGGREGATIONS` maps a config name to one, with the
unit that `share_weight` must count so that micro-batches and processes add up to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from rlhfkit.algorithms.advantages import masked_gae
from rlhfkit.algorithms.core import _zero_outside, masked_mean, whiten
from rlhfkit.algorithms.kl import kl_k1, kl_shaped_rewards

KLEstimator = Callable[[Tensor, Tensor], Tensor]


def _groups(scores: Tensor, group_size: int) -> Tensor:
    """scores (B,) as (num_prompts, K) float32, K = group_size; ValueError unless K >= 2 divides B."""
    if group_size < 2:
        raise ValueError(
            f"group_size must be at least 2 for a group-relative estimator (one response has no group to compare "
            f"with), got {group_size}"
        )
    if scores.dim() != 1 or scores.shape[0] % group_size != 0:
        raise ValueError(
            f"scores of shape {tuple(scores.shape)} do not split into groups of "
            f"group_size={group_size} consecutive rows"
        )
    return scores.float().view(-1, group_size)  # (num_prompts, K)


def _centred(groups: Tensor) -> Tensor:
    """groups (num_prompts, K) minus each row's mean; exactly 0 for a row of equal scores (no rounding residue)."""
    shifted = groups - groups[:, :1]
    return shifted - shifted.mean(dim=-1, keepdim=True)


def grpo_advantages(scores: Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, DeepSeekMath, sec. 4.1.2), one per response.

        A_i = (r_i - mean(r_1..r_K)) / (std(r_1..r_K) + eps)

    scores: (B,) in groups of K = group_size consecutive rows; returns (B,) float32. std is
    Bessel-corrected, as in TRL and verl. scale_by_std=False gives Dr. GRPO (Liu et al. 2025,
    "Understanding R1-Zero-like training"), A_i = r_i - mean: dividing by the std up-weights
    prompts that are nearly always solved or nearly always failed. A group of equal scores gets
    advantage 0 (never NaN): it carries no signal about which response was better.
    """
    groups = _groups(scores, group_size)
    centred = _centred(groups)
    if scale_by_std:
        std = groups.std(dim=-1, keepdim=True)
        centred = torch.where(std > 0, centred / (std + eps), 0.0)
    return centred.reshape(-1)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to basics"; Kool et al. 2019), one per response.

        A_i = r_i - 1/(K-1) sum_{j != i} r_j = K/(K-1) (r_i - mean(r_1..r_K))

    scores: (B,) in groups of K = group_size consecutive rows; returns (B,) float32. The baseline
    of each sample is the mean of the others, so it does not depend on the sample itself and the
    gradient estimate stays unbiased.
    """
    centred = _centred(_groups(scores, group_size))
    return (centred * group_size / (group_size - 1)).reshape(-1)


def broadcast_over_tokens(advantages: Tensor, response_mask: Tensor) -> Tensor:
    """A sequence-level advantage (B,) given to every real token of its response: (B, T), 0 on padding."""
    return torch.where(response_mask.bool(), advantages.float().unsqueeze(-1), 0.0)


def reward_to_go(rewards: Tensor, response_mask: Tensor, gamma: float = 1.0) -> Tensor:
    """The return from each token on: G_t = sum_{s >= t} gamma^(s-t) r_s, over one response per row.

    rewards, response_mask: (B, T); returns (B, T) float32, 0 on padding. This is GAE with a zero
    value function and lambda = 1, so it is computed by `masked_gae`.
    """
    returns, _ = masked_gae(rewards, torch.zeros_like(rewards, dtype=torch.float32), response_mask, gamma, lam=1.0)
    return returns


def reinforce_plus_plus_advantages(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    kl_coef: float,
    estimator: KLEstimator = kl_k1,
) -> Tensor:
    """REINFORCE++ (Hu 2025): the KL-shaped return, whitened over all real tokens of the batch.

        r_t = -beta * KL_t + [t is the last real token] * score
        G_t = sum_{s >= t} r_s                          (gamma = 1)
        A_t = (G_t - mean_batch G) / std_batch G

    scores: (B,); logprobs, ref_logprobs, response_mask: (B, T); returns (B, T) float32, 0 on
    padding. The batch statistics stand in for a critic; they are those of the tensors given, so
    under several processes pass the gathered global batch (or the paper's estimator is not what
    runs). Equal returns everywhere give advantage 0.
    """
    rewards, _ = kl_shaped_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef, estimator)
    return whiten(reward_to_go(rewards, response_mask), response_mask)


def reinforce_plus_plus_baseline_advantages(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    group_size: int,
    kl_coef: float,
    estimator: KLEstimator = kl_k1,
) -> Tensor:
    """REINFORCE++-baseline (Hu 2025): REINFORCE++ on scores centred by their group's mean.

        score'_i = r_i - mean(r_1..r_K),   then as `reinforce_plus_plus_advantages`

    Shapes as there, scores in groups of K = group_size consecutive rows. The group mean removes
    the prompt's difficulty (what RLOO and GRPO do); the global whitening keeps the scale stable
    without GRPO's per-group division by a small std.
    """
    centred = grpo_advantages(scores, group_size, scale_by_std=False)
    return reinforce_plus_plus_advantages(centred, logprobs, ref_logprobs, response_mask, kl_coef, estimator)


def policy_gradient_loss(logprobs: Tensor, advantages: Tensor, mask: Tensor | None) -> Tensor:
    """REINFORCE (Williams 1992): the score-function estimator as a loss to minimise.

        loss = -mean_t log pi(a_t|s_t) * A_t,   grad = -mean_t A_t * grad log pi(a_t|s_t)

    logprobs, advantages, mask: (B, T), or (N,) with mask None. A_t is the return (REINFORCE),
    the return minus a baseline, or a critic's advantage (A2C); it is treated as a constant.
    On the samples of the current policy this is the gradient of PPO's surrogate at ratio 1.
    """
    return -masked_mean(_zero_outside(logprobs, mask) * advantages.float().detach(), mask)


# ---------------------------------------------------------------------------
# Loss aggregation: (B, T) per-token losses -> one number
# ---------------------------------------------------------------------------


def token_mean(values: Tensor, response_mask: Tensor, max_new_tokens: int) -> Tensor:
    """Every real token of the batch weighs the same (DAPO, Yu et al. 2025; PPO here).

        loss = sum_{i,t} m_it x_it / sum_{i,t} m_it

    values, response_mask: (B, T); a 0-dim tensor. max_new_tokens is not used (the signature is
    shared with `constant_normalizer`). share_weight counts tokens.
    """
    return masked_mean(values, response_mask)


def sequence_mean_token_mean(values: Tensor, response_mask: Tensor, max_new_tokens: int) -> Tensor:
    """GRPO's original reduction (Shao et al. 2024, eq. 3): the mean over responses of each one's token mean.

        loss = 1/B sum_i (sum_t m_it x_it / sum_t m_it)

    values, response_mask: (B, T); a 0-dim tensor. A token of a short response weighs more than
    one of a long response, the length bias Dr. GRPO points out. An empty response counts as a
    response contributing 0. max_new_tokens is not used. share_weight counts sequences.
    """
    mask = response_mask.bool()
    per_sequence = _zero_outside(values, mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_sequence.mean()


def constant_normalizer(values: Tensor, response_mask: Tensor, max_new_tokens: int) -> Tensor:
    """Dr. GRPO's reduction (Liu et al. 2025): the token sum over a constant, B * max_new_tokens.

        loss = sum_{i,t} m_it x_it / (B * max_new_tokens)

    values, response_mask: (B, T); a 0-dim tensor. Every token weighs the same in every batch,
    whatever the lengths, so the gradient has no length bias. share_weight counts sequences.
    """
    if max_new_tokens <= 0:
        raise ValueError(f"constant_normalizer needs max_new_tokens > 0, got {max_new_tokens}")
    return _zero_outside(values, response_mask).sum() / (values.shape[0] * max_new_tokens)


@dataclasses.dataclass(frozen=True)
class LossAggregation:
    """A reduction of per-token losses, and what its normaliser counts (for `share_weight`)."""

    reduce: Callable[[Tensor, Tensor, int], Tensor]  # (values (B, T), response_mask (B, T), max_new_tokens) -> 0-dim
    counts_tokens: bool  # True: the normaliser counts real tokens; False: it counts sequences

    def count(self, response_mask: Tensor) -> int:
        """Tokens or sequences in this (micro-)batch, as share_weight's local_count or global_count."""
        return int(response_mask.bool().sum()) if self.counts_tokens else int(response_mask.shape[0])


LOSS_AGGREGATIONS: dict[str, LossAggregation] = {
    "token_mean": LossAggregation(token_mean, counts_tokens=True),
    "sequence_mean_token_mean": LossAggregation(sequence_mean_token_mean, counts_tokens=False),
    "constant_normalizer": LossAggregation(constant_normalizer, counts_tokens=False),
}


def kl_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    estimator: KLEstimator,
    aggregate: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """The KL to the reference as a loss term (GRPO, Shao et al. 2024, eq. 4), instead of a reward penalty.

        loss = aggregate_t KL_t(pi || ref),  KL_t by `estimator` (k1, k2, k3 in algorithms.kl)

    logprobs (with gradient), ref_logprobs, response_mask: (B, T); a 0-dim tensor. aggregate is a
    reduction with max_new_tokens bound, e.g. functools.partial(LOSS_AGGREGATIONS[name].reduce,
    max_new_tokens=...), the same as the policy loss's. As a loss only the estimator's gradient
    matters: on samples of pi (no gradient through the sampling), k1's expected gradient is 0,
    k2's is that of KL(pi || ref), and k3's (GRPO's choice) that of the reverse KL(ref || pi).
    """
    mask = response_mask.bool()
    per_token = estimator(_zero_outside(logprobs, mask), _zero_outside(ref_logprobs, mask))
    return aggregate(per_token, mask)
