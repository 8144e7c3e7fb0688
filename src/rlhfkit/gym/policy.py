"""The actor-critic of classic PPO: two MLPs, a categorical or a diagonal-Gaussian policy.

As in the PPO paper's experiments (and its baselines code): separate tanh MLPs
for the policy and the value function, orthogonal initialisation with gain
sqrt(2) for hidden layers, 0.01 for the policy's output (a near-uniform, or
near-zero-mean, first policy) and 1 for the value output, zero biases. For a
Box action space the policy is N(mu(s), diag(sigma^2)) with log sigma a
learned vector that does not depend on the state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rlhfkit.algorithms import entropy_from_logits, logprobs_from_logits
from rlhfkit.gym.config import GymConfig
from rlhfkit.gym.envs import EnvSpec
from rlhfkit.gym.normalization import ObservationNormalizer

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _mlp(sizes: list[int], output_gain: float, orthogonal_init: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        if orthogonal_init:
            last = i == len(sizes) - 2
            nn.init.orthogonal_(linear.weight, gain=output_gain if last else math.sqrt(2))
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        layers.append(nn.Tanh())
    return nn.Sequential(*layers[:-1])


def _run(mlp: nn.Sequential, x: Tensor) -> Tensor:
    """mlp(x) by the same ops on the same weights (so the same numbers), without nn.Module's per-call dispatch.

    The updates call it once per minibatch on a few hundred rows, where that dispatch is a visible part of
    the cost (benchmarks/RESULTS.md, sessions 6 and 7).
    """
    for layer in mlp:
        x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else torch.tanh(x)
    return x


class ActionDistribution(NamedTuple):
    """pi(.|s) for a batch of states: what a KL between two policies needs."""

    out: Tensor  # (N, action_dim): logits (Discrete) or means (Box)
    log_std: Tensor | None  # (action_dim,) for Box, None for Discrete

    def frozen(self) -> ActionDistribution:
        """A copy that no later change of the policy's parameters (in place, as TRPO makes them) can reach."""
        return ActionDistribution(
            self.out.detach().clone(), None if self.log_std is None else self.log_std.detach().clone()
        )


class ActorCritic(nn.Module):
    """pi(a|s) and V(s) for flat observations (N, obs_dim), for the updates; `PolicySnapshot` acts.

    discrete: `action_dim` actions, actions are (N,) int64 indices.
    otherwise: `action_dim` real coordinates, actions are (N, action_dim) float32.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        hidden_sizes: list[int],
        orthogonal_init: bool = True,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        self.discrete = discrete
        self.actor = _mlp([obs_dim, *hidden_sizes, action_dim], output_gain=0.01, orthogonal_init=orthogonal_init)
        self.critic = _mlp([obs_dim, *hidden_sizes, 1], output_gain=1.0, orthogonal_init=orthogonal_init)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def value(self, observations: Tensor) -> Tensor:
        """(N, obs_dim) -> V(s) (N,)."""
        return _run(self.critic, observations).squeeze(-1)

    def evaluate(self, observations: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For the updates: (log pi(a|s) (N,), entropy of pi(.|s) (N,), V(s) (N,))."""
        distribution = self.distribution(observations)
        return self._logprobs(distribution.out, actions), self.entropy(distribution), self.value(observations)

    def logprobs(self, observations: Tensor, actions: Tensor) -> Tensor:
        """log pi(a|s) (N,), without V(s): what TRPO's surrogate and line search need."""
        return self._logprobs(_run(self.actor, observations), actions)

    def entropy(self, distribution: ActionDistribution) -> Tensor:
        """H(pi(.|s)) (N,) of `distribution(observations)`."""
        if self.discrete:
            return entropy_from_logits(distribution.out)
        # H(N(mu, sigma^2)) = sum_i log sigma_i + 1/2 log(2 pi e)
        return (self.log_std + 0.5 + _LOG_SQRT_2PI).sum().expand(len(distribution.out))

    def _logprobs(self, out: Tensor, actions: Tensor) -> Tensor:
        """log pi(a|s) (N,) from the actor's output `out` (logits or means)."""
        if self.discrete:
            return logprobs_from_logits(out, actions)
        return self._gaussian_logprobs((actions - out) * torch.exp(-self.log_std))

    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters of pi alone (not V's): what TRPO's natural gradient moves."""
        return [*self.actor.parameters(), *([] if self.discrete else [self.log_std])]

    def distribution(self, observations: Tensor) -> ActionDistribution:
        """pi(.|s) as numbers: logits (N, action_dim), or means (N, action_dim) and the log std (action_dim,)."""
        return ActionDistribution(_run(self.actor, observations), None if self.discrete else self.log_std)

    def kl_from(self, old: ActionDistribution, observations: Tensor) -> Tensor:
        """KL(old || pi(.|s)) per state (N,), exactly (TRPO's constraint; its Hessian is the Fisher matrix).

        Categorical:       sum_a p_old(a) (log p_old(a) - log p(a))
        Diagonal Gaussian: sum_i log(sigma_i / sigma_old_i) + (sigma_old_i^2 + (mu_old_i - mu_i)^2) / (2 sigma_i^2)
                           - 1/2
        """
        new = self.distribution(observations)
        if self.discrete:
            old_logp, logp = torch.log_softmax(old.out, -1), torch.log_softmax(new.out, -1)
            return (old_logp.exp() * (old_logp - logp)).sum(-1)
        old_log_std, log_std = cast(Tensor, old.log_std), cast(Tensor, new.log_std)
        variance_ratio = torch.exp(2 * (old_log_std - log_std))  # sigma_old^2 / sigma^2
        squared_shift = (old.out - new.out).pow(2) * torch.exp(-2 * log_std)  # (mu_old - mu)^2 / sigma^2
        return (log_std - old_log_std + 0.5 * (variance_ratio + squared_shift - 1)).sum(-1)

    def _gaussian_logprobs(self, z: Tensor) -> Tensor:
        """log N(a; mu, sigma^2) = sum_i -z_i^2 / 2 - log sigma_i - 1/2 log(2 pi), with z = (a - mu) / sigma."""
        return (-0.5 * z.pow(2) - self.log_std - _LOG_SQRT_2PI).sum(-1)


class PolicySnapshot:
    """pi and V with the weights they have now, in numpy: what acting in the environments calls once per step.

    A rollout or an evaluation asks for a few rows at a time, where the cost is per operation, not per
    number: a torch operation costs several microseconds of dispatch, a numpy one about one, and here the
    actor and critic run side by side as one network (first layers stacked, later ones block-diagonal:
    zeros between the two), so a step is three products instead of six. The weights are copied, so
    the snapshot is the policy of the moment it was taken (a rollout's pi_old). The draws come from
    torch's generator (`torch.rand`, `torch.randn`), which the run's RNG state and its checkpoints keep.
    Its numbers are ActorCritic's to float32 rounding (the sums run in another order).
    """

    def __init__(self, policy: ActorCritic):
        actor = [layer for layer in policy.actor if isinstance(layer, nn.Linear)]
        critic = [layer for layer in policy.critic if isinstance(layer, nn.Linear)]
        self.discrete = policy.discrete
        self.action_dim = actor[-1].out_features
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        for i, (a, c) in enumerate(zip(actor, critic)):
            w_actor, w_critic = a.weight.detach().numpy().T, c.weight.detach().numpy().T  # (in, out)
            if i == 0:  # both read the observation
                weight = np.concatenate([w_actor, w_critic], 1)
            else:  # each reads its own half of the layer before
                weight = np.zeros(
                    (w_actor.shape[0] + w_critic.shape[0], w_actor.shape[1] + w_critic.shape[1]), np.float32
                )
                weight[: w_actor.shape[0], : w_actor.shape[1]] = w_actor
                weight[w_actor.shape[0] :, w_actor.shape[1] :] = w_critic
            bias = np.concatenate([a.bias.detach().numpy(), c.bias.detach().numpy()])
            self.layers.append((weight, bias))
        self.log_std = None if policy.discrete else policy.log_std.detach().numpy().copy()

    def _forward(self, observations: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, obs_dim) -> (the actor's output (N, action_dim), V(s) (N,))."""
        x = np.asarray(observations.numpy(), np.float32)
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = np.tanh(x)
        return x[:, : self.action_dim], x[:, self.action_dim]

    def value(self, observations: Tensor) -> Tensor:
        """(N, obs_dim) -> V(s) (N,)."""
        return torch.from_numpy(np.ascontiguousarray(self._forward(observations)[1]))

    def act(self, observations: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Sample a ~ pi(.|s) (or take its mode) -> (actions, log pi(a|s) (N,), V(s) (N,)).

        A categorical draw is by inverse CDF on one `torch.rand` per row; a Gaussian one adds sigma * `torch.randn`.
        """
        out, values = self._forward(observations)
        if self.discrete:
            shifted = out - out.max(-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            if deterministic:
                actions = out.argmax(-1)
            else:  # the number of cumulative probabilities below u ~ U[0, 1) (the last is 1 but for rounding)
                u = torch.rand(len(out)).numpy()
                actions = (np.cumsum(np.exp(logp), -1)[:, :-1] < u[:, None]).sum(-1)
            logprobs = logp[np.arange(len(out)), actions]
        else:
            log_std = cast(np.ndarray, self.log_std)
            noise = np.zeros_like(out) if deterministic else torch.randn(out.shape).numpy()  # z = (a - mu) / sigma
            actions = out + np.exp(log_std) * noise
            logprobs = (-0.5 * noise**2 - log_std - np.float32(_LOG_SQRT_2PI)).sum(-1)
        return (
            torch.from_numpy(np.ascontiguousarray(actions)),
            torch.from_numpy(np.ascontiguousarray(logprobs, np.float32)),
            torch.from_numpy(np.ascontiguousarray(values)),
        )


def build_policy(config: GymConfig, spec: EnvSpec) -> ActorCritic:
    """The actor-critic `config.policy` describes, sized for `spec`'s observations and actions."""
    return ActorCritic(
        spec.obs_dim,
        spec.action_dim,
        spec.discrete,
        config.policy.hidden_sizes,
        config.policy.orthogonal_init,
        config.policy.log_std_init,
    )


def save_policy(directory: Path, policy: ActorCritic, obs_normalizer: ObservationNormalizer | None) -> None:
    """A run's final/: policy.safetensors, and obs_normalizer.safetensors (the policy means nothing without it)."""
    save_file(
        {k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(directory / "policy.safetensors")
    )
    if obs_normalizer is not None:
        save_file(obs_normalizer.stats.state_dict(), str(directory / "obs_normalizer.safetensors"))


def load_policy(directory: Path, config: GymConfig, spec: EnvSpec) -> tuple[ActorCritic, ObservationNormalizer | None]:
    """What `save_policy` wrote into `directory`, for the run's `config`."""
    policy = build_policy(config, spec)
    policy.load_state_dict(load_file(str(directory / "policy.safetensors")))
    if not config.env.normalize_observation:
        return policy, None
    obs_normalizer = ObservationNormalizer(spec.obs_dim)
    obs_normalizer.stats.load_state_dict(load_file(str(directory / "obs_normalizer.safetensors")))
    return policy, obs_normalizer
