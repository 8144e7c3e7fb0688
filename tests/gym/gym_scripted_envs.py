"""Tiny scripted environments for the Gymnasium recipe's tests, registered under the RlhfkitTest namespace.

They live in a module of their own (imported by conftest.py), not in conftest.py itself: pickle
finds a class by module name, and with several conftest.py files in the suite `conftest` names
whichever was imported last, so the environments would not pickle and resume would not be exact.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ScriptedEnv(gym.Env):
    """A clock whose episodes end on a schedule, so a rollout can be worked out by hand.

    Observation: [10 * e + k], e the episode number, k the steps taken in it.
    Reward: 1 per step. Odd episodes terminate after 2 steps; the TimeLimit of
    the registration truncates every episode after 3. A seeded reset starts at
    episode `seed % 2`, so sub-environment 0 (seed 0) begins with an even
    episode and sub-environment 1 (seed 1) with an odd one.
    """

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space: spaces.Space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.episode, self.k = -1, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode = seed % 2 if seed is not None else self.episode + 1
        self.k = 0
        return np.array([10 * self.episode], np.float32), {}

    def step(self, action):
        self.k += 1
        terminated = self.episode % 2 == 1 and self.k == 2
        return np.array([10 * self.episode + self.k], np.float32), 1.0, terminated, False, {}


class MultiDiscreteActionEnv(ScriptedEnv):
    action_space = spaces.MultiDiscrete([2, 3])


class BanditEnv(gym.Env):
    """A two-armed bandit: every episode is one step from the observation [0]; arm 1 pays 1, arm 0 pays 0."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), float(action), True, False, {}


if "RlhfkitTest/Scripted-v0" not in gym.registry:
    gym.register("RlhfkitTest/Scripted-v0", entry_point=ScriptedEnv, max_episode_steps=3)  # type: ignore[arg-type]
    gym.register("RlhfkitTest/MultiDiscreteAction-v0", entry_point=MultiDiscreteActionEnv, max_episode_steps=3)  # type: ignore[arg-type]
    gym.register("RlhfkitTest/Bandit-v0", entry_point=BanditEnv)  # type: ignore[arg-type]
