"""The rollout buffer at episode ends: truncation bootstraps from V(final observation), termination from nothing."""

from __future__ import annotations

import numpy as np
import torch

from rlhfkit.algorithms import generalized_advantage_estimation
from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.rollout import EnvRunner, Episode

F, T = False, True


class ClockValuePolicy:
    """Always action 0 with log-prob 0; V(s) = the observation itself, so every value is known by hand."""

    def act(self, observations, deterministic=False):
        n = len(observations)
        return torch.zeros(n, dtype=torch.int64), torch.zeros(n), observations[:, 0].clone()

    def value(self, observations):
        return observations[:, 0].clone()


def _runner() -> EnvRunner:
    spec = inspect_env("RlhfkitTest/Scripted-v0")
    return EnvRunner(spec, num_envs=2, seed=0, normalize_observation=False, normalize_reward=False, gamma=0.5)


def test_rollout_arrays_at_truncation_and_termination_are_the_hand_worked_ones():
    runner = _runner()
    rollout, episodes = runner.collect(ClockValuePolicy(), steps=7)
    # Sub-env 0 (episodes 0, 1, 2): 0 1 2 |trunc, final obs 3| 10 11 |term, final 12| 20 21 -> current obs 22
    # Sub-env 1 (episodes 1, 2, 3): 10 11 |term, final 12| 20 21 22 |trunc, final 23| 30 31 |term, final 32| -> 40
    # next_values: V(s_{t+1}) inside an episode, V(final obs) at a truncation, 0 at a termination,
    # V(current obs) = 22 after the last step of sub-env 0.
    assert rollout.observations[..., 0].tolist() == [[0, 1, 2, 10, 11, 20, 21], [10, 11, 20, 21, 22, 30, 31]]
    assert rollout.values.tolist() == [[0, 1, 2, 10, 11, 20, 21], [10, 11, 20, 21, 22, 30, 31]]
    assert rollout.next_values.tolist() == [[1, 2, 3, 11, 0, 21, 22], [11, 0, 21, 22, 23, 31, 0]]
    assert rollout.terminated.tolist() == [[F, F, F, F, T, F, F], [F, T, F, F, F, F, T]]
    assert rollout.episode_end.tolist() == [[F, F, T, F, T, F, F], [F, T, F, F, T, F, T]]
    assert rollout.rewards.tolist() == [[1.0] * 7, [1.0] * 7]
    # Finished episodes, in order of time then sub-env: t1 env1, t2 env0, t4 env0 and env1, t6 env1.
    assert episodes == [Episode(2.0, 2), Episode(3.0, 3), Episode(2.0, 2), Episode(3.0, 3), Episode(2.0, 2)]
    assert runner.observations[:, 0].tolist() == [22, 40]


def test_truncated_step_keeps_its_bootstrap_in_the_advantage():
    rollout, _ = _runner().collect(ClockValuePolicy(), steps=7)
    advantages, returns = generalized_advantage_estimation(
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminated,
        rollout.episode_end,
        gamma=0.5,
        lam=1.0,
    )
    # Sub-env 0, delta_t = 1 + 0.5 * next_value * (1 - terminated) - value:
    #   1.5, 1, 0.5 (truncation: 1 + 0.5*3 - 2), -3.5, -10 (termination: 1 - 11), -8.5, -9
    # A_t = delta_t + 0.5 * A_{t+1}, not carried across the ends at t2 and t4:
    #   A6 = -9, A5 = -8.5 - 4.5 = -13, A4 = -10, A3 = -3.5 - 5 = -8.5, A2 = 0.5,
    #   A1 = 1 + 0.25 = 1.25, A0 = 1.5 + 0.625 = 2.125
    # (Treating the truncation as a termination would give A2 = 1 - 2 = -1.)
    assert advantages[0].tolist() == [2.125, 1.25, 0.5, -8.5, -10.0, -13.0, -9.0]
    assert returns[0].tolist() == [2.125, 2.25, 2.5, 1.5, 1.0, 7.0, 12.0]


def test_two_rollouts_continue_each_other_exactly():
    whole, whole_episodes = _runner().collect(ClockValuePolicy(), steps=7)
    runner = _runner()
    first, first_episodes = runner.collect(ClockValuePolicy(), steps=4)
    second, second_episodes = runner.collect(ClockValuePolicy(), steps=3)
    for name in ("observations", "values", "next_values", "terminated", "episode_end", "rewards"):
        joined = torch.cat([getattr(first, name), getattr(second, name)], dim=1)
        assert torch.equal(joined, getattr(whole, name)), name
    assert first_episodes + second_episodes == whole_episodes


def test_state_dict_restores_the_episodes_in_progress():
    runner = _runner()
    runner.collect(ClockValuePolicy(), steps=4)
    state = runner.state_dict()
    expected, expected_episodes = runner.collect(ClockValuePolicy(), steps=3)
    restored = _runner()
    restored.load_state_dict(state, reset_seed=123)
    got, got_episodes = restored.collect(ClockValuePolicy(), steps=3)
    assert torch.equal(got.observations, expected.observations)
    assert torch.equal(got.next_values, expected.next_values)
    assert got_episodes == expected_episodes
    assert np.array_equal(restored.episode_lengths, runner.episode_lengths)
