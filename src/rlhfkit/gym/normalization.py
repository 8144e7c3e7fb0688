"""Running observation normalisation and reward scaling for continuous control.

Both are the usual practice of PPO's MuJoCo implementations (OpenAI baselines'
VecNormalize, kept by Stable-Baselines3): observations are standardised by a
running mean and variance, and rewards are divided by a running standard
deviation of the discounted return (not of the reward), so that the critic's
targets keep a scale near 1 whatever the environment's units. Both are clipped
to +-10. Their state is part of a checkpoint, and the observation statistics
are part of the saved policy: a policy trained on normalised observations
means nothing without them.
"""

from __future__ import annotations

import numpy as np
import torch

from rlhfkit.algorithms import RunningMeanStd

CLIP = 10.0
PRIOR_COUNT = 1e-4  # baselines' VecNormalize: the first batch all but replaces the prior (mean 0, var 1)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, -CLIP), CLIP)  # np.clip costs ~10x more on arrays this small


class ObservationNormalizer:
    """obs -> clip((obs - mean) / sqrt(var + eps), -10, 10), with running statistics."""

    def __init__(self, obs_dim: int):
        self.stats = RunningMeanStd((obs_dim,), prior_count=PRIOR_COUNT)

    def __call__(self, observations: np.ndarray, update: bool) -> np.ndarray:
        """observations: (B, obs_dim) -> float32 (B, obs_dim); `update` first folds them into the statistics."""
        if update:
            self.stats.update(torch.from_numpy(observations))
        normalized = (observations - self.stats.mean.numpy()) / self.stats.std.numpy()
        return _clip(normalized).astype(np.float32)


class RewardScaler:
    """r_t -> clip(r_t / sqrt(Var[G] + eps), -10, 10), G the running discounted return of each environment.

        G_t = gamma * G_{t-1} + r_t, reset to 0 after the step that ends an episode.

    Only the scale changes, never the sign or the mean: subtracting a mean
    would turn a reward for staying alive into a penalty.
    """

    def __init__(self, num_envs: int, gamma: float):
        self.gamma = gamma
        self.returns = np.zeros(num_envs, np.float64)
        self.stats = RunningMeanStd((), prior_count=PRIOR_COUNT)

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """rewards, episode_end: (num_envs,) -> scaled float32 (num_envs,)."""
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(torch.from_numpy(self.returns))
        self.returns[episode_end] = 0.0
        return _clip(rewards / float(self.stats.std)).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"returns": torch.from_numpy(self.returns.copy()), **self.stats.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.returns = state["returns"].numpy().astype(np.float64)
        self.stats.load_state_dict(state)
