"""How per-micro-batch losses add up to the loss of one optimiser step, across micro-batches and processes.

A loss that is a mean over the tokens (or records) of a global batch cannot be computed as a mean of
per-micro-batch means when the micro-batches hold different counts: the mean of means weights a
token in a short micro-batch more than one in a long micro-batch. Each micro-batch's own mean is
therefore scaled by `share_weight` before its backward pass, so that the accumulated gradient,
averaged over processes as DDP does, equals the gradient of one mean over the whole batch.
"""

from __future__ import annotations


def share_weight(local_count: float, global_count: float, num_processes: int = 1) -> float:
    """Weight of one micro-batch's mean: local_count * num_processes / global_count.

    local_count: tokens (or records) in this micro-batch; global_count: in the optimiser step's
    whole batch over all processes. The factor num_processes undoes DDP's average over processes:
    Σ_processes Σ_micro (n_m · N / n) · mean_m / N = Σ_m n_m · mean_m / n, the global mean.
    """
    if global_count <= 0:
        raise ValueError(f"share_weight: the batch holds no tokens or records (global_count={global_count})")
    return local_count * num_processes / global_count
