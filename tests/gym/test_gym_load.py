"""`rlhfkit.gym.load`: a trained policy whose `predict` acts as `rlhfkit gym --eval` does, SB3-style."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlhfkit.gym
import rlhfkit.gym.evaluate
from rlhfkit.cli import main
from rlhfkit.errors import UserError


class Recorder(gym.Wrapper):
    """Records every (observation, action) the environment sees."""

    def __init__(self, env: gym.Env, pairs: list):
        super().__init__(env)
        self.pairs, self.last = pairs, None

    def reset(self, **kwargs):
        self.last, info = self.env.reset(**kwargs)
        return self.last, info

    def step(self, action):
        self.pairs.append((np.array(self.last), np.array(action)))
        observation, *rest = self.env.step(action)
        self.last = observation
        return observation, *rest


@pytest.fixture(scope="module")
def normalized_cartpole(tmp_path_factory):
    """A short CartPole run with the observation normaliser on, so that predict must apply it."""
    out = tmp_path_factory.mktemp("cartpole-normalized")
    sets = ["train.total_timesteps=1024", "ppo.rollout_steps=128", "eval.episodes=2", "env.normalize_observation=true"]
    assert main(["gym", "--env", "CartPole-v1", "--out", str(out), *[x for s in sets for x in ("--set", s)]]) == 0
    return out


def test_predict_gives_the_actions_that_gym_eval_steps_with(normalized_cartpole, monkeypatch):
    pairs: list = []
    make_env = rlhfkit.gym.evaluate.make_env
    monkeypatch.setattr(rlhfkit.gym.evaluate, "make_env", lambda *args, **kw: Recorder(make_env(*args, **kw), pairs))
    assert main(["gym", "--eval", str(normalized_cartpole), "--set", "eval.episodes=2"]) == 0
    assert len(pairs) >= 20  # two whole episodes

    policy = rlhfkit.gym.load(normalized_cartpole)
    assert policy.obs_normalizer is not None and policy.obs_normalizer.stats.count > 100  # the saved statistics
    observations = np.stack([obs for obs, _ in pairs])
    actions = np.stack([action for _, action in pairs])
    one = [policy.predict(obs, deterministic=True) for obs in observations]
    assert all(state is None for _, state in one)
    assert all(np.ndim(action) == 0 and policy.action_space.contains(action) for action, _ in one)
    np.testing.assert_array_equal([action for action, _ in one], actions)
    batch, state = policy.predict(observations, deterministic=True)
    assert state is None and batch.shape == (len(pairs),)
    np.testing.assert_array_equal(batch, actions)
    # from final/ as well; without the normaliser the same policy would act otherwise on some states
    np.testing.assert_array_equal(
        rlhfkit.gym.load(normalized_cartpole / "final").predict(observations, deterministic=True)[0], actions
    )
    policy.obs_normalizer = None
    assert not np.array_equal(policy.predict(observations, deterministic=True)[0], actions)


def test_sampled_actions_are_valid_and_wrong_shapes_are_refused(normalized_cartpole):
    policy = rlhfkit.gym.load(normalized_cartpole)
    observations = np.zeros((64, 4), np.float32)
    actions, _ = policy.predict(observations)  # SB3's default: sampled
    assert actions.shape == (64,) and set(actions.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match=r"expected an observation of shape \(4,\) or a batch \(N, 4\)"):
        policy.predict(np.zeros(5))


def test_a_directory_without_a_finished_run_is_refused(tmp_path):
    with pytest.raises(UserError, match="holds no policy.safetensors"):
        rlhfkit.gym.load(tmp_path)
