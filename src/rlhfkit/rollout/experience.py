"""Steps 2-4 of a PPO iteration: score the rollout, shape the rewards, estimate advantages.

scores  = r_φ(x, y)                                    one per response
r_t     = -β·KL_t  (+ score on the last real token)    Ziegler et al. 2019, eq. 2
A_t     = GAE(γ, λ) with the rollout-time values V(s_t)
R_t     = A_t + V(s_t)                                 value targets
A_t     ← whiten(A_t) over the whole batch (all processes)

Without a critic (GRPO, RLOO, REINFORCE++) step 4 is `rollout.advantages.critic_free_advantages`
instead, and the experience has no values and no returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlhfkit.algorithms import RunningMeanStd, kl_k1, kl_shaped_rewards, masked_gae, whiten
from rlhfkit.rollout.advantages import AdvantageSpec, critic_free_advantages
from rlhfkit.rollout.generation import Samples

Gather = Callable[[torch.Tensor], torch.Tensor]  # every process's rows of a tensor, in process order


def identity(tensor: torch.Tensor) -> torch.Tensor:
    """The gather of a single process."""
    return tensor


@dataclass
class Experience:
    """Everything the update needs, per response token (B, R) or per response (B,)."""

    samples: Samples
    logprobs: torch.Tensor  # (B, R) log π_old, fp32
    ref_logprobs: torch.Tensor  # (B, R) log π_ref
    values: torch.Tensor | None  # (B, R) V_old(s_t); None without a critic
    scores: torch.Tensor  # (B,) shaped scores that entered the reward
    raw_scores: torch.Tensor  # (B,) what the reward source returned
    rewards: torch.Tensor  # (B, R) KL-shaped per-token rewards (no KL term when the KL is a loss term)
    kl: torch.Tensor  # (B, R) per-token KL estimate
    advantages: torch.Tensor  # (B, R) whitened (GAE), or the critic-free estimator's
    returns: torch.Tensor | None  # (B, R) value targets; None without a critic
    frozen_states: torch.Tensor | None = None  # (B, P + R, H) output of the frozen layers below the adapters

    def select(self, index: torch.Tensor) -> Experience:
        """The rows `index` of every tensor (a minibatch)."""
        samples = self.samples.select(index)
        names = (
            "logprobs",
            "ref_logprobs",
            "values",
            "scores",
            "raw_scores",
            "rewards",
            "kl",
            "advantages",
            "returns",
            "frozen_states",
        )
        fields = {name: None if getattr(self, name) is None else getattr(self, name)[index] for name in names}
        return Experience(samples=samples, **fields)


def shape_scores(
    raw_scores: torch.Tensor,
    ended: torch.Tensor,
    no_eos_penalty: float,
    moments: RunningMeanStd | None,
    clip: float,
    gather: Gather = identity,
) -> torch.Tensor:
    """(B,) -> (B,): optional running normalisation, clipping to ±clip, then a penalty for responses with no EOS.

    The running moments take every process's scores (`gather`), so that all processes normalise alike.
    """
    scores = raw_scores
    if moments is not None:
        moments.update(gather(raw_scores))
        scores = (scores - moments.mean) / moments.std
    if clip > 0:
        scores = scores.clamp(-clip, clip)
    return scores - no_eos_penalty * (~ended).float()


def whiten_across(x: torch.Tensor, mask: torch.Tensor, gather: Gather = identity, rank: int = 0) -> torch.Tensor:
    """`whiten` over the masked entries of every process's (B, T) batch; returns this process's rows.

    `gather` concatenates the processes' rows in process order (right-padded to the longest T, the
    padding masked out), so this process's rows are rank·B ... rank·B + B - 1, their first T columns.
    """
    rows, columns = x.shape
    return whiten(gather(x), gather(mask))[rank * rows : (rank + 1) * rows, :columns]


def build_experience(
    samples: Samples,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor | None,
    raw_scores: torch.Tensor,
    scores: torch.Tensor,
    spec: AdvantageSpec,
    gather: Gather = identity,
    rank: int = 0,
    frozen_states: torch.Tensor | None = None,
) -> Experience:
    """Steps 3-4: KL-shaped rewards, then GAE on the rollout-time values whitened over all processes,
    or (values None) the critic-free estimator of `spec`."""
    mask = samples.response_mask
    rewards, kl = kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, spec.kl_coef, estimator=spec.kl_estimator)
    if spec.critic_free:
        advantages = critic_free_advantages(scores, logprobs, ref_logprobs, mask, spec, gather, rank)
        returns = None
    else:
        values = values.masked_fill(~mask, 0.0)
        advantages, returns = masked_gae(rewards, values, mask, spec.gamma, spec.lam)
        advantages = whiten_across(advantages, mask, gather, rank)
    return Experience(
        samples, logprobs, ref_logprobs, values, scores, raw_scores, rewards, kl, advantages, returns, frozen_states
    )


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) per-response sum of log π − log π_ref over real tokens: the `kl/mean` the papers report."""
    return (kl_k1(logprobs, ref_logprobs) * mask).sum(-1)
