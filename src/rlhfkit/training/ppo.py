"""Step 5 of `rlhfkit ppo` (and grpo, rloo): the update of a language-model actor-critic on one rollout.

K epochs of shuffled minibatches (`algorithms.ppo_epochs`, the Gym recipe's driver too), each one
optimiser step accumulated over micro-batches:

    loss = surrogate (clipped, or the PPO paper's adaptive-KL penalty)
           - entropy_coef · entropy  [+ β · KL to the reference, algorithm.kl_in=loss]
           + value_coef · clipped value loss  [+ γ · SFT loss on demonstrations, PPO-ptx]

each reduced by the named aggregation (algorithm.loss_aggregation). Each micro-batch's loss is weighted
by `share_weight` of what the aggregation counts (tokens for token_mean, responses otherwise) in the
global minibatch, so the step is the one of a single aggregation over every process's rows. The
statistics are the same weighted means over all processes (the losses by the aggregation, the rest by
tokens): equal on every process, so all of them stop early together.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch

from rlhfkit.algorithms import (
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    PolicySample,
    clipped_policy_loss,
    clipped_value_loss,
    kl_loss,
    kl_penalty_policy_loss,
    masked_mean,
    ppo_epochs,
    share_weight,
    update_kl_penalty_beta,
)
from rlhfkit.configs.ppo import PPOConfig
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.data.records import demonstration_response
from rlhfkit.rollout.experience import Experience
from rlhfkit.runtime import Runtime
from rlhfkit.training import optimizer_step
from rlhfkit.training.logprobs import response_token_nll


@dataclasses.dataclass
class PPOUpdate:
    """The update of `model` (as `runtime.prepare` returned it) by `optimizer`; `__call__(experience)` runs one.

    `kl_coef()` is the KL controller's current β; `ptx_records` are PPO-ptx's demonstrations.
    """

    config: PPOConfig
    runtime: Runtime
    model: Any
    optimizer: Any
    scheduler: Any
    kl_coef: Callable[[], float]
    tokenizer: Any
    ptx_records: list[dict[str, Any]]

    def __post_init__(self) -> None:
        algorithm = self.config.algorithm
        self.penalty_beta = self.config.ppo.penalty_beta  # the kl_penalty objective's β, adapted after every update
        self.aggregation = LOSS_AGGREGATIONS[algorithm.loss_aggregation]
        self.kl_in_loss = KL_ESTIMATORS[algorithm.kl_estimator_name] if algorithm.kl_in == "loss" else None

    def __call__(self, experience: Experience) -> dict[str, float]:
        """K epochs of shuffled minibatches (each process shuffles its own rows of the global batch)."""
        config = self.config
        self.model.train()
        stats = ppo_epochs(
            num_rows=experience.samples.response_ids.shape[0],
            mini_batch_size=config.mini_batch_size // self.runtime.num_processes,
            epochs=config.train.ppo_epochs,
            minibatch_step=lambda rows: self.minibatch_step(experience.select(rows)),
            target_kl=config.ppo.target_kl,
        )
        if config.ppo.objective == "kl_penalty":
            self.penalty_beta = update_kl_penalty_beta(
                self.penalty_beta, stats["policy/approx_kl"], config.ppo.penalty_target
            )
        return stats

    def minibatch_step(self, mini: Experience) -> dict[str, float]:
        """One optimiser step on this process's rows of a minibatch, accumulated over micro-batches."""
        runtime, mask, size = self.runtime, mini.samples.response_mask, self.config.micro_batch_size
        rows = mask.shape[0]
        local = torch.tensor([float(mask.sum()), float(self.aggregation.count(mask))], device=runtime.device)
        global_tokens, global_units = runtime.sum(local).tolist()
        aggregate = functools.partial(self.aggregation.reduce, max_new_tokens=self.config.generation.max_new_tokens)
        sums: dict[str, torch.Tensor] = {}
        for start in range(0, rows, size):
            micro = mini.select(torch.arange(start, min(start + size, rows)))
            units = self.aggregation.count(micro.samples.response_mask)
            loss, aggregated, token_means = self.micro_losses(micro, aggregate)
            runtime.backward(loss * share_weight(units, global_units, runtime.num_processes))
            accumulate(sums, aggregated, share_weight(units, global_units))
            accumulate(sums, token_means, share_weight(float(micro.samples.response_mask.sum()), global_tokens))
        totals = dict(zip(sums, runtime.sum(torch.stack(list(sums.values()))).tolist()))
        if self.config.ppo.ptx_coef > 0:
            totals["ptx/loss"] = self.ptx_backward()
        totals["train/grad_norm"] = optimizer_step(
            list(self.model.parameters()), self.optimizer, self.scheduler, self.config.optim.max_grad_norm
        )
        return totals

    def micro_losses(self, micro: Experience, aggregate) -> tuple[torch.Tensor, dict, dict]:
        """The micro-batch's loss, and its statistics: (loss, aggregated losses, token means).

        The policy loss, the KL loss term, the entropy bonus and the value loss are reduced by
        `aggregate` (algorithm.loss_aggregation); clip fractions, approx-KL and entropy are token means.
        """
        config, mask = self.config, micro.samples.response_mask
        logprobs, entropy, values = self.model(
            micro.samples.input_ids, micro.samples.attention_mask, micro.samples.response_ids,
            config.generation.temperature, self.runtime.precision,
            entropy_grad=config.ppo.entropy_coef != 0, frozen_states=micro.frozen_states,
        )  # fmt: skip
        if config.ppo.objective == "clip":
            surrogate, trust = clipped_policy_loss, config.ppo.clip_range
        else:
            surrogate, trust = kl_penalty_policy_loss, self.penalty_beta
        pg_loss, pg = surrogate(PolicySample(logprobs, micro.logprobs, micro.advantages, mask), trust, aggregate)
        aggregated = {"policy/loss": pg_loss}
        token_means = {"policy/clipfrac": pg["clipfrac"], "policy/approx_kl": pg["approx_kl"]}
        token_means["policy/entropy"] = masked_mean(entropy, mask)
        loss = pg_loss
        if config.ppo.entropy_coef:
            loss = loss - config.ppo.entropy_coef * aggregate(entropy, mask)
        if self.kl_in_loss is not None:
            aggregated["kl/loss"] = kl_loss(logprobs, micro.ref_logprobs, mask, self.kl_in_loss, aggregate)
            loss = loss + self.kl_coef() * aggregated["kl/loss"]
        if values is not None:
            vf_loss, vf = clipped_value_loss(
                values, micro.values, micro.returns, mask, config.ppo.value_clip_range, reduce=aggregate
            )
            aggregated["value/loss"], token_means["value/clipfrac"] = vf_loss, vf["clipfrac"]
            loss = loss + config.ppo.value_coef * vf_loss
        return loss, aggregated, token_means

    def ptx_backward(self) -> float:
        """PPO-ptx (InstructGPT eq. 2): γ · SFT loss on a micro-batch of demonstrations, added to the gradient."""
        config, records = self.config, self.ptx_records
        picks = torch.randint(len(records), (config.micro_batch_size,)).tolist()
        max_length = config.data.max_prompt_length + config.generation.max_new_tokens
        items = [
            tokenize_prompt_response(self.tokenizer, records[i], demonstration_response(records[i]), max_length)
            for i in picks
        ]
        batch = self.runtime.to_device(pad_batch(items, self.tokenizer.pad_token_id))
        loss = response_token_nll(self.runtime.unwrap(self.model).policy, *batch, dtype=self.runtime.precision)
        self.runtime.backward(config.ppo.ptx_coef * loss)
        return float(self.runtime.sum(loss.detach())) / self.runtime.num_processes


def accumulate(sums: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], weight: float) -> None:
    """sums[key] += weight * stats[key], detached: a micro-batch's share of the minibatch's statistics."""
    for key, value in stats.items():
        sums[key] = sums.get(key, 0.0) + value.detach().float() * weight
