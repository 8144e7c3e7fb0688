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

CLIP = 10.0
EPS = 1e-8


def _clip(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, -CLIP), CLIP)  # np.clip costs ~10x more on arrays this small


class RunningMeanStd:
    """Mean and (population) variance of everything passed to `update`, batch by batch, in float64.

    Batches are merged with the parallel formula of Chan et al. (1979):
        delta = mean_b - mean,  n' = n + n_b
        mean' = mean + delta * n_b / n'
        var'  = (var * n + var_b * n_b + delta^2 * n * n_b / n') / n'
    The count starts at a tiny 1e-4 (mean 0, variance 1), so the first batch
    all but replaces the prior and nothing divides by zero.
    """

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        """batch: (B, *shape)."""
        batch = np.asarray(batch, np.float64)
        batch_count = batch.shape[0]
        batch_mean = (
            np.add.reduce(batch, 0) / batch_count
        )  # the ufuncs themselves: np.mean's overhead dominates tiny batches
        batch_var = np.add.reduce((batch - batch_mean) ** 2, 0) / batch_count
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        self.var = (
            self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        ) / total
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.tensor(np.asarray(self.mean), dtype=torch.float64),
            "var": torch.tensor(np.asarray(self.var), dtype=torch.float64),
            "count": torch.tensor(self.count, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean = state["mean"].numpy().astype(np.float64)
        self.var = state["var"].numpy().astype(np.float64)
        self.count = float(state["count"])


class ObservationNormalizer:
    """obs -> clip((obs - mean) / sqrt(var + eps), -10, 10), with running statistics."""

    def __init__(self, obs_dim: int):
        self.stats = RunningMeanStd((obs_dim,))

    def __call__(self, observations: np.ndarray, update: bool) -> np.ndarray:
        """observations: (B, obs_dim) -> float32 (B, obs_dim); `update` first folds them into the statistics."""
        if update:
            self.stats.update(observations)
        normalized = (observations - self.stats.mean) / np.sqrt(self.stats.var + EPS)
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
        self.stats = RunningMeanStd(())

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """rewards, episode_end: (num_envs,) -> scaled float32 (num_envs,)."""
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(self.returns)
        self.returns[episode_end] = 0.0
        return _clip(rewards / np.sqrt(self.stats.var + EPS)).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"returns": torch.from_numpy(self.returns.copy()), **self.stats.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.returns = state["returns"].numpy().astype(np.float64)
        self.stats.load_state_dict(state)
