"""Which pairs to label: where the reward heads disagree most (Christiano et al. 2017, §2.2.4), or at random.

Head e predicts P_e(a ≻ b) = σ(r_e(a) − r_e(b)). A pair on which the heads agree would teach the
reward model little whatever the label; one on which they disagree is where a label settles
something. Christiano et al. chose queries by the variance of the predictors' preference
probabilities over the ensemble; so do we. The first round has no reward model yet: random.

Each head also trains on its own bootstrap resample of the comparisons: a comparison's weight for
head e is a Poisson(1) draw (the online bootstrap of Oza & Russell 2001, which approximates
sampling |D| records with replacement), keyed by the comparison's text so that it stays the same
as labels accumulate over rounds.
"""

from __future__ import annotations

import hashlib
import math
import random

import torch


def preference_disagreement(scores_a: torch.Tensor, scores_b: torch.Tensor) -> torch.Tensor:
    """(N, E) head scores of each pair's two responses -> (N,) Var_e σ(r_e(a) − r_e(b)) (population variance)."""
    probabilities = torch.sigmoid(scores_a.float() - scores_b.float())  # (N, E)
    return probabilities.var(dim=-1, correction=0)


def most_disagreed(disagreement: torch.Tensor, count: int) -> list[int]:
    """Indices of the `count` largest disagreements, largest first (ties: the earlier pair)."""
    order = sorted(range(len(disagreement)), key=lambda i: (-float(disagreement[i]), i))
    return order[:count]


def random_pairs(num_pairs: int, count: int, seed: int) -> list[int]:
    """`count` distinct pair indices drawn uniformly, in the order drawn."""
    return random.Random(seed).sample(range(num_pairs), min(count, num_pairs))


def poisson_one(rng: random.Random) -> int:
    """A Poisson(1) draw (Knuth: count uniforms until their product falls below e^-1)."""
    count, product, limit = 0, rng.random(), math.exp(-1.0)
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def bootstrap_weights(keys: list[str], ensemble_size: int, seed: int) -> torch.Tensor:
    """(N, E) Poisson(1) weights, row n drawn from the seed and `keys[n]` alone; all ones for one head.

    One head is the plain reward model: no resampling.
    """
    if ensemble_size == 1:
        return torch.ones(len(keys), 1)
    rows = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()
        rng = random.Random(int(digest[:16], 16))
        rows.append([float(poisson_one(rng)) for _ in range(ensemble_size)])
    return torch.tensor(rows).reshape(len(keys), ensemble_size)
