"""One update of each algorithm on the road to PPO, picked by name from `UPDATES`.

Every update gets the same things: the actor-critic, its Adam optimiser, the run's config and a
rollout of N environments x T steps (`EnvRunner.collect`), and returns its statistics. They
differ only where the algorithms do:

    REINFORCE (Williams 1992)     A_t = G_t - b(s_t), G_t the Monte-Carlo return       one gradient step
    A2C (Mnih et al. 2016)        A_t by GAE(gamma, lambda) over T-step segments       one gradient step
    TRPO (Schulman et al. 2015)   natural gradient on E[ratio A] within KL <= delta    V fitted by Adam epochs
    PPO (Schulman et al. 2017)    clipped surrogate E[min(ratio A, clip(ratio) A)]     K epochs of minibatches

The math is `rlhfkit.algorithms`' (GAE, `policy_gradient_loss`, the trust-region functions, the
clipped losses, `ppo_epochs`), the same the language-model recipes use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

from rlhfkit.algorithms import (
    PolicySample,
    backtracking_line_search,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    fisher_vector_operator,
    flat_grad,
    generalized_advantage_estimation,
    natural_gradient_step,
    policy_gradient_loss,
    ppo_epochs,
    whiten,
)
from rlhfkit.gym.config import GymConfig, TRPOConfig
from rlhfkit.gym.policy import ActorCritic
from rlhfkit.gym.rollout import Rollout

Rows = dict[str, Tensor]  # one batch, a row per environment step: (N*T, ...)
Update = Callable[[ActorCritic, torch.optim.Optimizer, GymConfig, Rollout], dict[str, float]]


def advantages_and_returns(rollout: Rollout, gamma: float, lam: float, baseline: bool = True) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) over the rollout, (N, T) each; baseline=False takes V = 0 (returns, no bootstrap)."""
    values, next_values = (rollout.values, rollout.next_values) if baseline else (0 * rollout.values,) * 2
    return generalized_advantage_estimation(
        rollout.rewards, values, next_values, rollout.terminated, rollout.episode_end, gamma, lam
    )


def complete_returns(episode_end: Tensor) -> Tensor:
    """(N, T) bool: True at step t when its episode ends within the rollout (at t or later), so G_t is known."""
    return episode_end.flip(-1).cumsum(-1).flip(-1) > 0


def _adam_step(optimizer: torch.optim.Optimizer, loss: Tensor, max_grad_norm: float) -> None:
    """Backward, clip the gradient norm of the optimiser's parameters (max_grad_norm > 0), step."""
    optimizer.zero_grad()
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_grad_norm)
    optimizer.step()


def _policy_gradient_step(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rows: Rows, value_coef: float
) -> dict[str, float]:
    """One Adam step on the actor-critic loss of the A3C paper (its eq. for the gradient, as a loss):

    -mean_t A_t log pi(a_t|s_t) + value_coef * 0.5 mean_t (V(s_t) - R_t)^2 - entropy_coef * mean_t H(pi(.|s_t))
    """
    ppo = config.ppo
    logprobs, entropy, values = policy.evaluate(rows["observations"], rows["actions"])
    advantages = rows["advantages"]
    if ppo.normalize_advantages and len(advantages) > 1:  # one row has no spread (REINFORCE may keep only one)
        advantages = whiten(advantages)
    policy_loss = policy_gradient_loss(logprobs, advantages, None)
    value_loss, _ = clipped_value_loss(values, rows["values"], rows["returns"], None, 0.0)
    entropy = entropy.mean()
    loss = policy_loss - ppo.entropy_coef * entropy + (value_coef * value_loss if value_coef > 0 else 0.0)
    _adam_step(optimizer, loss, config.optim.max_grad_norm)
    stats = {"policy/loss": policy_loss.item(), "policy/entropy": entropy.item()}
    return stats | ({"value/loss": value_loss.item()} if value_coef > 0 else {})


def reinforce_update(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rollout: Rollout
) -> dict[str, float]:
    """REINFORCE (Williams 1992): one step along mean_t (G_t - b(s_t)) grad log pi(a_t|s_t).

    G_t = sum_k gamma^k r_{t+k} to the end of the episode: GAE with lambda = 1, bootstrapped only
    where a time limit cut the episode (from V with a baseline; not at all without one). A step whose
    episode runs past the rollout has no return yet and is left out (`complete_returns`); the next
    rollout continues that episode. With reinforce.baseline, b = V, fitted to G_t in the same step;
    else b = 0 and the critic is not used.
    """
    baseline = config.reinforce.baseline
    advantages, returns = advantages_and_returns(rollout, config.ppo.gamma, 1.0, baseline)
    keep = complete_returns(rollout.episode_end).flatten()
    stats = {"reinforce/complete_fraction": keep.float().mean().item()}
    if not keep.any():
        return stats  # no episode ended: no return is known yet
    rows = {name: column[keep] for name, column in rollout.rows(advantages, returns).items()}
    stats |= _policy_gradient_step(policy, optimizer, config, rows, config.ppo.value_coef if baseline else 0.0)
    if baseline:
        stats["value/explained_variance"] = float(explained_variance(rows["values"], rows["returns"]))
    return stats


def a2c_update(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rollout: Rollout
) -> dict[str, float]:
    """A2C, the synchronous advantage actor-critic (Mnih et al. 2016, A3C with its workers in lockstep).

    One step on the actor-critic loss with advantages by GAE(gamma, lambda). With lambda = 1 (its
    default) that is the paper's n-step advantage sum_{k<T-t} gamma^k r_{t+k} + gamma^{T-t} V(s_T) - V(s_t).
    """
    advantages, returns = advantages_and_returns(rollout, config.ppo.gamma, config.ppo.lam)
    stats = _policy_gradient_step(policy, optimizer, config, rollout.rows(advantages, returns), config.ppo.value_coef)
    return stats | {"value/explained_variance": float(explained_variance(rollout.values, returns))}


def _assign(params: list[nn.Parameter], flat: Tensor) -> None:
    """Copy the flat vector into the parameters, in place (each keeps its own storage, unlike vector_to_parameters)."""
    with torch.no_grad():
        for param, chunk in zip(params, flat.split([p.numel() for p in params])):
            param.copy_(chunk.view_as(param))


def trust_region_step(policy: ActorCritic, rows: Rows, trpo: TRPOConfig, normalize: bool) -> dict[str, float]:
    """TRPO's policy step (Schulman et al. 2015, sec. 6 and appendix C); the actor's parameters move in place.

        maximise L(theta) = mean_t ratio_t(theta) A_t  subject to  mean_t KL(pi_old(.|s_t) || pi_theta(.|s_t)) <= delta

    by the natural gradient s = F^-1 g (conjugate gradient on Fisher-vector products), scaled to the
    edge of the trust region, and a backtracking line search that keeps the largest fraction 2^-k
    of it that improves L and keeps the exact KL within delta (none: the policy stays).
    """
    observations, actions, old_logprobs = rows["observations"], rows["actions"], rows["logprobs"]
    advantages = whiten(rows["advantages"]) if normalize else rows["advantages"]
    params = policy.actor_parameters()
    with torch.no_grad():
        old = policy.distribution(observations).frozen()

    def surrogate() -> Tensor:
        return (torch.exp(policy.logprobs(observations, actions) - old_logprobs) * advantages).mean()

    def kl() -> Tensor:
        return policy.kl_from(old, observations).mean()

    def surrogate_and_kl_at(theta: Tensor) -> tuple[Tensor, Tensor]:
        _assign(params, theta)
        return surrogate(), kl()

    surrogate_before = surrogate()
    fisher = fisher_vector_operator(kl, params, trpo.cg_damping)
    full_step, expected = natural_gradient_step(
        flat_grad(surrogate_before, params), fisher, trpo.max_kl, trpo.cg_iterations
    )
    theta_old = parameters_to_vector(params).detach()
    step = backtracking_line_search(
        surrogate_and_kl_at, theta_old, full_step, expected, trpo.max_kl, trpo.line_search_steps
    )
    _assign(params, theta_old if step is None else theta_old + step)
    with torch.no_grad():
        surrogate_gain, kl_reached = (surrogate() - surrogate_before).item(), kl().item()
    return {
        "policy/kl": kl_reached,
        "policy/surrogate_gain": surrogate_gain,
        "policy/entropy": policy.entropy(old).mean().item(),
        "trpo/step_fraction": 0.0 if step is None else float(step @ full_step / (full_step @ full_step)),
        "trpo/expected_gain": float(expected),
    }


def _fit_value(policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rows: Rows) -> float:
    """TRPO's critic: trpo.value_epochs Adam passes of minibatches over the batch on 0.5 (V(s_t) - R_t)^2."""

    def minibatch_step(indices: Tensor) -> dict[str, Tensor]:
        values = policy.value(rows["observations"][indices])
        loss, _ = clipped_value_loss(values, rows["values"][indices], rows["returns"][indices], None, 0.0)
        _adam_step(optimizer, loss, config.optim.max_grad_norm)
        return {"value/loss": loss.detach()}

    return ppo_epochs(config.batch_size, config.train.mini_batch_size, config.trpo.value_epochs, minibatch_step)[
        "value/loss"
    ]


def trpo_update(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rollout: Rollout
) -> dict[str, float]:
    """TRPO: advantages by GAE(gamma, lambda), the trust-region policy step, then the critic fitted on its own."""
    advantages, returns = advantages_and_returns(rollout, config.ppo.gamma, config.ppo.lam)
    rows = rollout.rows(advantages, returns)
    stats = trust_region_step(policy, rows, config.trpo, config.ppo.normalize_advantages)
    return stats | {
        "value/loss": _fit_value(policy, optimizer, config, rows),
        "value/explained_variance": float(explained_variance(rollout.values, returns)),
    }


def _ppo_minibatch_step(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rows: Rows, indices: Tensor
) -> dict[str, Tensor]:
    """One Adam step on L^CLIP - c1 L^VF + c2 H over the rows `indices`; returns its statistics."""
    ppo = config.ppo
    logprobs, entropy, values = policy.evaluate(rows["observations"][indices], rows["actions"][indices])
    advantages = rows["advantages"][indices]
    if ppo.normalize_advantages:
        advantages = whiten(advantages)  # per minibatch, as the paper's code does
    policy_loss, policy_stats = clipped_policy_loss(
        PolicySample(logprobs, rows["logprobs"][indices], advantages), ppo.clip_range
    )
    value_loss, value_stats = clipped_value_loss(
        values, rows["values"][indices], rows["returns"][indices], None, ppo.value_clip_range
    )
    entropy = entropy.mean()
    _adam_step(
        optimizer, policy_loss + ppo.value_coef * value_loss - ppo.entropy_coef * entropy, config.optim.max_grad_norm
    )
    return {
        "policy/loss": policy_loss.detach(),
        "value/loss": value_loss.detach(),
        "policy/entropy": entropy.detach(),
        "policy/clipfrac": policy_stats["clipfrac"],
        "policy/approx_kl": policy_stats["approx_kl"],
        "value/clipfrac": value_stats["clipfrac"],
    }


def ppo_update(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, config: GymConfig, rollout: Rollout
) -> dict[str, float]:
    """PPO (Schulman et al. 2017, Algorithm 1): GAE, then K epochs of minibatch steps (`ppo_epochs`)."""
    advantages, returns = advantages_and_returns(rollout, config.ppo.gamma, config.ppo.lam)
    train = config.train
    stats = ppo_epochs(
        config.batch_size,
        train.mini_batch_size,
        train.ppo_epochs,
        partial(_ppo_minibatch_step, policy, optimizer, config, rollout.rows(advantages, returns)),
        config.ppo.target_kl,
    )
    return stats | {"value/explained_variance": float(explained_variance(rollout.values, returns))}


class Algorithm(NamedTuple):
    title: str
    update: Update
    adam_parameters: Callable[[ActorCritic], Iterable[nn.Parameter]]  # what the Adam optimiser steps
    plot_keys: tuple[str, ...]  # training.png


def _critic_parameters(policy: ActorCritic) -> Iterable[nn.Parameter]:
    return policy.critic.parameters()


EVERY_PLOT = ("policy/entropy", "value/explained_variance")  # training.png keys every algorithm draws
UPDATES: dict[str, Algorithm] = {
    "reinforce": Algorithm(
        "REINFORCE",
        reinforce_update,
        ActorCritic.parameters,
        ("policy/loss", *EVERY_PLOT, "reinforce/complete_fraction"),
    ),
    "a2c": Algorithm("A2C", a2c_update, ActorCritic.parameters, ("policy/loss", "value/loss", *EVERY_PLOT)),
    "trpo": Algorithm("TRPO", trpo_update, _critic_parameters, ("policy/kl", "trpo/step_fraction", *EVERY_PLOT)),
    "ppo": Algorithm("PPO", ppo_update, ActorCritic.parameters, ("policy/approx_kl", "policy/clipfrac", *EVERY_PLOT)),
}
