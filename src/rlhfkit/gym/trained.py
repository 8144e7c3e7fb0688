"""`rlhfkit.gym.load(path)`: a trained Gym policy, used as Stable-Baselines3 users use a model.

    policy = rlhfkit.gym.load("runs/gym-CartPole-v1-20261130-120000")   # or its final/
    obs, _ = env.reset()
    action, _ = policy.predict(obs, deterministic=True)
    obs, reward, terminated, truncated, _ = env.step(action)

`predict` takes observations as the environment gives them (flat vectors: one, or a batch of N),
applies the run's frozen observation normaliser, and returns what the environment takes (an
index for Discrete, the action clipped to the bounds for Box): exactly what `rlhfkit gym --eval`
steps its environment with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.config import load_config, load_yaml_mapping
from rlhfkit.errors import UserError
from rlhfkit.gym.config import GymConfig
from rlhfkit.gym.envs import EnvSpec, inspect_env, to_env_actions
from rlhfkit.gym.normalization import ObservationNormalizer
from rlhfkit.gym.policy import ActorCritic, PolicySnapshot, load_policy

POLICY_FILE = "policy.safetensors"


class TrainedPolicy:
    """A policy with what it needs to act: its environment's spaces and the observation statistics it trained on."""

    def __init__(self, policy: ActorCritic, spec: EnvSpec, obs_normalizer: ObservationNormalizer | None):
        self.policy = policy.eval()
        self.acting = PolicySnapshot(policy)
        self.spec = spec
        self.obs_normalizer = obs_normalizer
        self.action_space = spec.action_space

    @torch.no_grad()
    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """(actions, None), as SB3's `predict`: this policy has no recurrent state to return.

        observation: (obs_dim,) gives one action; (N, obs_dim) gives N. deterministic: the
        policy's mode (argmax, or the Gaussian mean) instead of a sample, as `--eval` acts by default.
        """
        observations = np.asarray(observation, dtype=np.float32)
        single = observations.ndim == 1
        if observations.ndim not in (1, 2) or observations.shape[-1] != self.spec.obs_dim:
            raise ValueError(
                f"predict: expected an observation of shape ({self.spec.obs_dim},) or a batch (N, {self.spec.obs_dim}) "
                f"of {self.spec.env_id}, got shape {observations.shape}"
            )
        batch = observations.reshape(-1, self.spec.obs_dim)
        if self.obs_normalizer is not None:
            batch = self.obs_normalizer(batch, update=False)
        actions, _, _ = self.acting.act(torch.from_numpy(batch), deterministic=deterministic)
        env_actions = to_env_actions(actions.numpy(), self.spec.action_space)
        return (env_actions[0] if single else env_actions), None


def load(path: str | Path) -> TrainedPolicy:
    """The policy of an `rlhfkit gym` run, from its output directory or that directory's final/."""
    path = Path(path)
    final = path if (path / POLICY_FILE).is_file() else path / "final"
    run = final.parent
    if not (final / POLICY_FILE).is_file():
        raise UserError(f"{path}: holds no {POLICY_FILE}; give an `rlhfkit gym` run that has finished, or its final/")
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run / 'config.yaml'} does not exist: the run's configuration says what the policy is")
    config = load_config(GymConfig, base=load_yaml_mapping(run / "config.yaml"))
    spec = inspect_env(config.env.id)
    policy, obs_normalizer = load_policy(final, config, spec)
    return TrainedPolicy(policy, spec, obs_normalizer)
