"""Running mean and variance of a stream of batches: the one copy every normaliser uses.

The language-model PPO normalises reward-model scores by their running moments (`score.normalize`);
the Gymnasium PPO standardises observations and scales rewards by a running std of the return
(baselines' VecNormalize). Both merge each new batch into the statistics with the parallel
formula of Chan, Golub and LeVeque (1979), which is exact: merging the moments of two batches
gives the moments of their concatenation, whatever the batch sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def merge_moments(
    mean: Tensor, var: Tensor, count: float, batch_mean: Tensor, batch_var: Tensor, batch_count: float
) -> tuple[Tensor, Tensor, float]:
    """(mean, population variance, count) of two sets of samples from the moments of each (Chan et al. 1979).

    delta = mean_b - mean,   n' = n + n_b
    mean' = mean + delta * n_b / n'
    var'  = (var * n + var_b * n_b + delta^2 * n * n_b / n') / n'
    """
    delta, total = batch_mean - mean, count + batch_count
    merged_mean = mean + delta * batch_count / total
    merged_var = (var * count + batch_var * batch_count + delta**2 * count * batch_count / total) / total
    return merged_mean, merged_var, total


class RunningMeanStd:
    """Mean and population variance of every sample passed to `update`, per coordinate of `shape`, in float64.

    The statistics start from a prior of mean 0 and variance 1 that weighs `prior_count` samples:
    0 (the default) lets the first batch replace it; baselines' VecNormalize uses 1e-4, so that a
    first batch of one sample (variance 0) leaves a variance just above 0 rather than exactly 0.
    The state lives on the CPU whatever device the batches come from.
    """

    def __init__(self, shape: tuple[int, ...] = (), prior_count: float = 0.0, epsilon: float = 1e-8):
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = float(prior_count)
        self.epsilon = epsilon

    def update(self, batch: Tensor) -> None:
        """Fold `batch` (B, *shape) into the statistics; with shape () every element of `batch` is one sample."""
        samples = batch.detach().to("cpu", torch.float64).reshape(-1, *self.mean.shape)  # (B, *shape)
        batch_var, batch_mean = torch.var_mean(samples, dim=0, correction=0)
        self.mean, self.var, self.count = merge_moments(
            self.mean, self.var, self.count, batch_mean, batch_var, len(samples)
        )

    @property
    def std(self) -> Tensor:
        """sqrt(var + epsilon): what a normaliser divides by, never 0."""
        return torch.sqrt(self.var + self.epsilon)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safetensors can hold them: the Gym policy's observation statistics are saved so)."""
        return {
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": torch.tensor(self.count, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.mean = state["mean"].to(torch.float64).clone()
        self.var = state["var"].to(torch.float64).clone()
        self.count = float(state["count"])
