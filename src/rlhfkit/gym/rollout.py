"""Running the policy in N environments for T steps: the rollout that PPO's update consumes.

The one subtle part is the end of an episode. A step that ends one returns
the first observation of the next (same-step autoreset), so V(s_{t+1}) for
that step is not the next stored value:
  - terminated (a terminal state): nothing is bootstrapped;
  - truncated (a time limit, the state itself is not terminal): the return
    is bootstrapped from V(final observation), read from infos["final_obs"].
Treating truncation as termination (as CleanRL's ppo.py does) teaches the
critic that the clock is part of the state, which it cannot see.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from gymnasium.utils import EzPickle
from torch import Tensor

from rlhfkit.gym.envs import EnvSpec, make_vector_env, to_env_actions
from rlhfkit.gym.normalization import ObservationNormalizer, RewardScaler


class Policy(Protocol):
    def act(self, observations: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]: ...

    def value(self, observations: Tensor) -> Tensor: ...


@dataclasses.dataclass
class Rollout:
    """T steps of N environments; time on the last dimension of every per-step tensor."""

    observations: Tensor  # (N, T, obs_dim), as the policy saw them (normalised if enabled)
    actions: Tensor  # (N, T) int64, or (N, T, action_dim) float32 (the unclipped Gaussian sample)
    logprobs: Tensor  # (N, T) log pi_old(a_t|s_t)
    values: Tensor  # (N, T) V(s_t) at rollout time
    rewards: Tensor  # (N, T) r_t, scaled if enabled
    next_values: Tensor  # (N, T) V(s_{t+1}); V(final observation) on truncation; 0 on termination
    terminated: Tensor  # (N, T) bool: s_{t+1} is terminal
    episode_end: Tensor  # (N, T) bool: the episode ended at t (terminated or truncated)

    def rows(self, advantages: Tensor, returns: Tensor) -> dict[str, Tensor]:
        """The PPO batch, one row per environment step, with (N, T) `advantages` and `returns`: (N*T, ...)."""
        return {
            "observations": self.observations.flatten(0, 1),  # (N*T, obs_dim)
            "actions": self.actions.flatten(0, 1),  # (N*T,) or (N*T, action_dim)
            "logprobs": self.logprobs.flatten(),
            "values": self.values.flatten(),
            "advantages": advantages.flatten(),
            "returns": returns.flatten(),
        }


class Episode(NamedTuple):
    """A finished episode, in the environment's own (unscaled) rewards."""

    return_: float
    length: int


def episode_statistics(episodes: list[Episode]) -> dict[str, float | None]:
    """Mean return and length of the episodes that finished during a rollout (None if none did)."""
    return {
        "charts/episodic_return": float(np.mean([e.return_ for e in episodes])) if episodes else None,
        "charts/episodic_length": float(np.mean([e.length for e in episodes])) if episodes else None,
        "charts/episodes": len(episodes),
    }


class _StepBuffers:
    """A rollout's per-step values, (T, N, ...) numpy arrays filled one step at a time."""

    def __init__(self, steps: int, num_envs: int, spec: EnvSpec):
        shape = (steps, num_envs)
        self.observations = np.zeros((*shape, spec.obs_dim), np.float32)
        self.actions = np.zeros(shape, np.int64) if spec.discrete else np.zeros((*shape, spec.action_dim), np.float32)
        self.logprobs, self.values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.rewards, self.final_values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.terminated, self.episode_end = np.zeros(shape, bool), np.zeros(shape, bool)

    def rollout(self, last_values: np.ndarray) -> Rollout:
        """The Rollout, (N, T, ...), given V(s_T) (N,)."""

        def per_env(array: np.ndarray) -> Tensor:  # (T, N, ...) -> (N, T, ...)
            return torch.from_numpy(np.ascontiguousarray(array.swapaxes(0, 1)))

        values = per_env(self.values)
        following_values = torch.cat([values[:, 1:], torch.from_numpy(last_values)[:, None]], 1)  # V(s_{t+1})
        episode_end = per_env(self.episode_end)
        return Rollout(
            observations=per_env(self.observations),
            actions=per_env(self.actions),
            logprobs=per_env(self.logprobs),
            values=values,
            rewards=per_env(self.rewards),
            next_values=torch.where(episode_end, per_env(self.final_values), following_values),
            terminated=per_env(self.terminated),
            episode_end=episode_end,
        )


class EnvRunner:
    """The vector environment and everything a rollout carries over to the next one.

    That is: the current observations, the running normalisers, and the
    returns and lengths of the episodes in progress. `state_dict` holds all of
    it, the environments included (pickled), so a resumed run continues the
    very episodes that were under way.
    """

    def __init__(
        self, spec: EnvSpec, num_envs: int, seed: int, normalize_observation: bool, normalize_reward: bool, gamma: float
    ):
        self.spec = spec
        self.envs = make_vector_env(spec.env_id, num_envs)
        self.obs_normalizer = ObservationNormalizer(spec.obs_dim) if normalize_observation else None
        self.reward_scaler = RewardScaler(num_envs, gamma) if normalize_reward else None
        raw_observations, _ = self.envs.reset(seed=seed)  # sub-environment i gets seed + i
        self.observations = self._normalize(raw_observations, update=True)
        self.episode_returns = np.zeros(num_envs, np.float64)
        self.episode_lengths = np.zeros(num_envs, np.int64)

    @property
    def num_envs(self) -> int:
        return self.envs.num_envs

    def _normalize(self, raw_observations: Any, update: bool) -> np.ndarray:
        observations = np.asarray(raw_observations, np.float32).reshape(len(raw_observations), -1)
        return observations if self.obs_normalizer is None else self.obs_normalizer(observations, update)

    @torch.no_grad()
    def collect(self, policy: Policy, steps: int) -> tuple[Rollout, list[Episode]]:
        """Run `policy` for `steps` steps in each environment -> (the rollout, the episodes that finished).

        The steps fill numpy buffers (T, N, ...) that become the rollout's tensors at the end: a step costs a
        few microseconds per operation, and a tensor per value per step was a visible part of a run's time.
        """
        n = self.num_envs
        buffers = _StepBuffers(steps, n, self.spec)
        finished: list[Episode] = []
        for t in range(steps):
            buffers.observations[t] = self.observations
            action, logprob, value = policy.act(torch.from_numpy(self.observations))
            action_array = action.numpy()
            raw_observations, raw_rewards, terminated, truncated, infos = self.envs.step(
                to_env_actions(action_array, self.spec.action_space)
            )
            episode_end = terminated | truncated
            self.observations = self._normalize(raw_observations, update=True)
            cut = truncated & ~terminated  # V(final observation) where a time limit cut the episode; 0 if terminal
            if cut.any():
                final_obs = self._normalize(np.stack(infos["final_obs"][cut]), update=False)
                buffers.final_values[t, cut] = policy.value(torch.from_numpy(final_obs)).numpy()
            buffers.rewards[t] = (
                raw_rewards if self.reward_scaler is None else self.reward_scaler(raw_rewards, episode_end)
            )
            finished += self._tally(raw_rewards, episode_end)
            buffers.actions[t], buffers.logprobs[t], buffers.values[t] = action_array, logprob.numpy(), value.numpy()
            buffers.terminated[t], buffers.episode_end[t] = terminated, episode_end
        last_values = policy.value(torch.from_numpy(self.observations)).numpy()  # V(s_T) (N,)
        return buffers.rollout(last_values), finished

    def _tally(self, raw_rewards: np.ndarray, episode_end: np.ndarray) -> list[Episode]:
        self.episode_returns += raw_rewards
        self.episode_lengths += 1
        if not episode_end.any():
            return []
        done = [
            Episode(float(self.episode_returns[i]), int(self.episode_lengths[i])) for i in np.flatnonzero(episode_end)
        ]
        self.episode_returns[episode_end] = 0.0
        self.episode_lengths[episode_end] = 0
        return done

    def _envs_pickle(self) -> bytes | None:
        """The environments' exact state, or None where it cannot be kept.

        EzPickle environments (Box2D, MuJoCo) pickle as their constructor arguments, not their state.
        """
        if any(isinstance(env.unwrapped, EzPickle) for env in self.envs.envs):
            return None
        try:
            return pickle.dumps(self.envs)
        except (pickle.PicklingError, TypeError, AttributeError):
            return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "envs": self._envs_pickle(),
            "observations": self.observations.copy(),
            "episode_returns": self.episode_returns.copy(),
            "episode_lengths": self.episode_lengths.copy(),
            "obs_normalizer": None if self.obs_normalizer is None else self.obs_normalizer.stats.state_dict(),
            "reward_scaler": None if self.reward_scaler is None else self.reward_scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], reset_seed: int) -> None:
        """Restore a `state_dict`; where the environments could not be saved, start new episodes from `reset_seed`."""
        if self.obs_normalizer is not None:
            self.obs_normalizer.stats.load_state_dict(state["obs_normalizer"])
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        if state["envs"] is None:
            warnings.warn(
                f"{self.spec.env_id}: its state does not pickle, so the resumed run restarts the episodes that were "
                "under way and is not bitwise equal to an uninterrupted run",
                stacklevel=2,
            )
            raw_observations, _ = self.envs.reset(seed=reset_seed)
            self.observations = self._normalize(raw_observations, update=False)
            if self.reward_scaler is not None:
                self.reward_scaler.returns[:] = 0.0
            return
        self.envs.close()
        self.envs = pickle.loads(state["envs"])
        self.observations = state["observations"].copy()
        self.episode_returns = state["episode_returns"].copy()
        self.episode_lengths = state["episode_lengths"].copy()

    def close(self) -> None:
        self.envs.close()
