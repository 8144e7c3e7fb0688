"""Query selection and the bootstrap, on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.loop.selection import bootstrap_weights, most_disagreed, preference_disagreement, random_pairs


def test_disagreement_is_the_variance_over_heads_of_the_preference_probability():
    # pair 0: the heads agree (differences 0, 0); pair 1: they split (differences +ln 3, -ln 3 -> P = 3/4, 1/4)
    scores_a = torch.tensor([[1.0, 2.0], [math.log(3.0), 0.0]])
    scores_b = torch.tensor([[1.0, 2.0], [0.0, math.log(3.0)]])
    disagreement = preference_disagreement(scores_a, scores_b)
    assert disagreement.tolist() == [0.0, pytest.approx(0.0625, abs=1e-7)]  # ((3/4 - 1/2)^2 + (1/4 - 1/2)^2) / 2
    assert most_disagreed(torch.tensor([0.1, 0.3, 0.3, 0.0]), 2) == [1, 2]  # ties: the earlier pair first


def test_random_pairs_are_distinct_and_seeded():
    picks = random_pairs(10, 4, seed=3)
    assert len(set(picks)) == 4 and picks == random_pairs(10, 4, seed=3) and picks != random_pairs(10, 4, seed=4)
    assert sorted(random_pairs(3, 5, seed=0)) == [0, 1, 2]


def test_bootstrap_weights_are_poisson_one_and_stable_as_labels_accumulate():
    keys = [f"comparison {i}" for i in range(4000)]
    weights = bootstrap_weights(keys, 3, seed=0)
    assert weights.shape == (4000, 3)
    assert abs(weights.mean().item() - 1.0) < 0.03  # Poisson(1): mean 1, variance 1, P(0) = 1/e
    assert abs(weights.var().item() - 1.0) < 0.06
    assert abs((weights == 0).float().mean().item() - math.exp(-1)) < 0.02
    assert torch.equal(bootstrap_weights(keys[:10], 3, seed=0), weights[:10])  # a key keeps its weights next round
    assert not torch.equal(bootstrap_weights(keys[:10], 3, seed=1), weights[:10])
    assert torch.equal(bootstrap_weights(keys[:5], 1, seed=0), torch.ones(5, 1))  # one head: no resampling
