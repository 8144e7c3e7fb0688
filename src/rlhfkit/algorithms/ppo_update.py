"""The PPO update driver: K epochs of shuffled minibatches with approx-KL early stopping.

One copy serves the language-model PPO and the Gymnasium PPO. What a minibatch step computes
(the losses, the token-weighted aggregation over micro-batches and processes, the optimiser step)
is the caller's; this module only decides which rows go into which step and when to stop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def ppo_epochs(
    num_rows: int,
    mini_batch_size: int,
    epochs: int,
    minibatch_step: Callable[[Tensor], dict[str, float]],
    target_kl: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Run up to `epochs` passes over `num_rows` rows in shuffled minibatches; return the mean statistics.

    Each epoch draws `torch.randperm(num_rows, generator=generator)` and splits it into chunks of
    `mini_batch_size` rows (the last one shorter when the size does not divide `num_rows`);
    `minibatch_step(indices)` takes one optimiser step on those rows and returns its statistics,
    which must include "policy/approx_kl" when `target_kl` > 0.

    Early stopping is the per-minibatch rule of Stable-Baselines3 and OpenAI baselines: the update
    stops right after the first minibatch whose approx-KL exceeds `target_kl` (0: never stops), so
    that step is kept and no later one runs. CleanRL checks the KL once per epoch instead, which
    lets a whole epoch run past the trust region.

    Returns the mean of each statistic over the minibatches that ran, plus "policy/early_stop"
    (1.0 if it stopped early) and "ppo/epochs" (epochs started, the stopped one included).
    """
    if num_rows < 1 or mini_batch_size < 1 or epochs < 1:
        raise ValueError(
            f"ppo_epochs: num_rows ({num_rows}), mini_batch_size ({mini_batch_size}) and epochs ({epochs}) must be >= 1"
        )
    if target_kl < 0:
        raise ValueError(f"ppo_epochs: target_kl must be >= 0 (0: never stop early), got {target_kl}")
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    epochs_started = 0
    stopped_early = False
    while epochs_started < epochs and not stopped_early:
        epochs_started += 1
        for indices in torch.randperm(num_rows, generator=generator).split(mini_batch_size):
            stats = minibatch_step(indices)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
                counts[key] = counts.get(key, 0) + 1
            if target_kl > 0 and stats["policy/approx_kl"] > target_kl:
                stopped_early = True
                break
    means = {key: totals[key] / counts[key] for key in totals}
    return {**means, "policy/early_stop": float(stopped_early), "ppo/epochs": float(epochs_started)}
