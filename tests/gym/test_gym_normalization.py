"""Observation normalisation and reward scaling against hand-worked and numpy figures."""

from __future__ import annotations

import numpy as np
import pytest

from rlhfkit.gym.normalization import ObservationNormalizer, RewardScaler


def test_observation_normalizer_standardises_clips_and_can_freeze():
    normalizer = ObservationNormalizer(obs_dim=1)
    normalizer(np.array([[0.0], [2.0], [4.0]]), update=True)  # mean ~2, var ~8/3
    # (8 - 2) / sqrt(8/3) = 3.674...; (1000 - 2) / sqrt(8/3) clips to 10; frozen stats do not move.
    out = normalizer(np.array([[8.0], [1000.0]]), update=False)
    np.testing.assert_allclose(out[:, 0], [6 / np.sqrt(8 / 3), 10.0], rtol=1e-4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(normalizer.stats.mean.numpy(), [2.0], rtol=1e-4)


def test_reward_scaler_divides_by_the_std_of_the_discounted_return_and_resets_it_at_episode_end():
    scaler = RewardScaler(num_envs=1, gamma=0.5)
    # Step 1: G = 1; the returns seen so far {1} have variance ~0, so 1 / sqrt(~2e-4) = 70.7 clips to 10.
    assert scaler(np.array([1.0]), np.array([False]))[0] == pytest.approx(10.0)
    # Step 2: G = 0.5 * 1 + 1 = 1.5; Var{1, 1.5} = 0.0625, so 1 / 0.25 = 4. The episode ends: G -> 0.
    assert scaler(np.array([1.0]), np.array([True]))[0] == pytest.approx(4.0, rel=1e-3)
    assert scaler.returns[0] == 0.0
    # Step 3: G = 0 * 0.5 + 2 = 2; Var{1, 1.5, 2} = 1/6, so 2 / sqrt(1/6) = 4.899 (the sign and mean are kept).
    assert scaler(np.array([2.0]), np.array([False]))[0] == pytest.approx(2 / np.sqrt(1 / 6), rel=1e-3)
