"""Step 2 of a PPO iteration past the reward: the policy's, the reference's and the critic's view of each response.

The sampling pass may already hold the policy's log-probs and last hidden states (`sample` keeps
them when it decoded in the run's precision); then only the reference and the value head (if the
run has a critic at all) run here.
With LoRA the reference is the policy with its adapter disabled, and its pass also returns the output
of the frozen layers below the adapters, from which every update forward of this batch starts.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.algorithms import explained_variance
from rlhfkit.models.actor_critic import ActorCritic, response_logprobs
from rlhfkit.rollout.experience import Experience, Gather, identity, sequence_kl
from rlhfkit.rollout.generation import Samples


@torch.no_grad()
def score_responses(
    model: ActorCritic,
    reference: nn.Module | None,
    samples: Samples,
    temperature: float,
    dtype: str,
    rows_per_pass: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logprobs, ref_logprobs, values, frozen_states): (B, R) each, log-probs zero past the response.

    values is None when the model has no critic (GRPO, RLOO, REINFORCE++).

    `reference` None: the policy with its adapter disabled (LoRA); frozen_states is then the (B, P + R, H)
    output of the layers below the adapters (None without LoRA on the top layers only).

    rows_per_pass > 0 scores at most that many responses per forward pass: a pass holds (rows, R, V)
    logits and, with LoRA on the top layers, every layer's hidden states, so scoring the whole batch
    at once would need more memory than the update, which runs a micro-batch at a time.
    """
    rows = samples.query_ids.shape[0]
    if 0 < rows_per_pass < rows:
        parts = [
            score_responses(model, reference, samples.select(torch.arange(start, min(start + rows_per_pass, rows))),
                            temperature, dtype)
            for start in range(0, rows, rows_per_pass)
        ]  # fmt: skip
        return tuple(None if field[0] is None else torch.cat(field) for field in zip(*parts))
    ids, mask, response_ids = samples.input_ids, samples.attention_mask, samples.response_ids
    if reference is None:
        with model.reference_context():
            ref_logprobs, frozen_states = response_logprobs(
                model.policy, ids, mask, response_ids, temperature, dtype, model.frozen_layers
            )
    else:
        ref_logprobs, frozen_states = response_logprobs(reference, ids, mask, response_ids, temperature, dtype)
    if samples.logprobs is not None:
        logprobs, values = samples.logprobs, model.critic(samples.hidden) if model.shares_trunk else None
    else:  # a separate critic, or sampling ran in another precision than the run's: the policy's own pass
        logprobs, _, values = model(ids, mask, response_ids, temperature, dtype, frozen_states=frozen_states)
    response_mask = samples.response_mask
    return (
        logprobs.masked_fill(~response_mask, 0.0),
        ref_logprobs.masked_fill(~response_mask, 0.0),
        values,
        frozen_states,
    )


def rollout_metrics(experience: Experience, gather: Gather = identity) -> dict[str, float]:
    """What the rollout of all processes looked like: scores, KL, shaped return, lengths, the critic's fit.

    Without a critic, instead of the critic's fit: the share of responses whose advantage is 0
    everywhere (for a group estimator, groups whose responses all scored alike: they teach nothing).
    """
    mask = experience.samples.response_mask

    def across(per_response: torch.Tensor) -> torch.Tensor:  # (B,) -> (all processes' B,)
        return gather(per_response.float().unsqueeze(1)).squeeze(1)

    scores = across(experience.raw_scores)
    kl = across(sequence_kl(experience.logprobs, experience.ref_logprobs, mask))
    lengths = across(mask.sum(-1))
    if experience.values is None:
        fit = {"advantage/zero_fraction": float(across((experience.advantages == 0).all(dim=-1)).mean())}
    else:
        ev = explained_variance(gather(experience.values), gather(experience.returns), gather(mask))
        fit = {"value/explained_variance": float(ev)}
    return {
        "reward/score_mean": float(scores.mean()),
        "reward/score_std": float(scores.std()) if scores.numel() > 1 else 0.0,
        "reward/total_mean": float(across((experience.rewards * mask).sum(-1)).mean()),
        "kl/mean": float(kl.mean()),
        **fit,
        "response/length_mean": float(lengths.mean()),
        "response/eos_fraction": float(across(experience.samples.ended).mean()),
        "response/tokens": float(lengths.sum()),
    }
