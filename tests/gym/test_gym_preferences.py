"""Christiano et al. 2017 on Gymnasium: the label schedule, segments, the synthetic labeller, the reward ensemble."""

from __future__ import annotations

import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gym_runs import interrupt_at_call, run_gym, without_timing
from safetensors.torch import load_file

import rlhfkit.gym.preferences as preferences_module
from rlhfkit.checkpoint import load_checkpoint
from rlhfkit.cli import main
from rlhfkit.errors import UserError
from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.preferences import (
    Comparisons,
    PreferenceReward,
    RewardConfig,
    RewardEnsemble,
    agreement,
    comparisons_due,
    correlation,
    cut_segments,
    fit_reward_model,
    label_pairs,
    preference_probability,
    reward_features,
    segment_starts,
    synthetic_preferences,
)
from rlhfkit.gym.rollout import Rollout
from rlhfkit.tracking import read_jsonl


def test_labels_arrive_a_quarter_first_then_at_a_falling_rate_until_the_budget():
    config = RewardConfig(kind="preferences", comparisons=100, initial_fraction=0.25, rate_halved_at=0.25)
    # U = 5 updates, h = 0.25 * 4 = 1: c(u) = 25 + round(75 * ln(u) / ln(5))
    due = [comparisons_due(u, 5, config) for u in range(6)]
    assert due == [0, 25, 25 + round(75 * math.log(2) / math.log(5)), 76, 90, 100]
    assert due[2] == 57
    increments = np.diff(due[1:])
    assert (increments[:-1] >= increments[1:]).all()  # the rate never rises
    assert comparisons_due(1, 1, config) == 100  # a one-update run spends the budget at once
    assert comparisons_due(7, 5, config) == 100


def test_segments_lie_inside_one_episode_and_may_end_on_its_last_step():
    episode_end = torch.zeros(2, 6, dtype=torch.bool)
    episode_end[0, 2] = True  # environment 0: an episode ends at step 2, the next starts at step 3
    starts = segment_starts(episode_end, 3)
    # env 0: [0, 2] ends on the episode's last step (kept); [1, 3] and [2, 4] cross into the next; [3, 5] is inside
    assert starts.tolist() == [[0, 0], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3]]
    assert segment_starts(episode_end, 7).shape == (0, 2)  # longer than the rollout
    assert segment_starts(episode_end, 1).shape == (12, 2)  # one step never crosses


def test_cut_segments_slices_the_steps_of_each_start():
    values = torch.arange(2 * 6).reshape(2, 6) * 10  # [n, t] = 10 * (6 n + t)
    segments = cut_segments(values, torch.tensor([[0, 3], [1, 1]]), 3)
    assert segments.tolist() == [[30, 40, 50], [70, 80, 90]]
    features = torch.arange(2 * 6 * 2).reshape(2, 6, 2)
    assert cut_segments(features, torch.tensor([[1, 4]]), 2).tolist() == [[[20, 21], [22, 23]]]


def test_the_labeller_without_noise_prefers_the_higher_true_return_and_ties_are_half():
    first, second = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 2.0])
    for _ in range(3):
        assert synthetic_preferences(first, second, temperature=0.0).tolist() == [1.0, 0.0, 0.5]


def test_the_noisy_labeller_follows_bradley_terry_on_the_true_returns():
    probability = preference_probability(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), temperature=2.0)
    assert probability.tolist() == pytest.approx([1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(1.0))])  # 0.622, 0.269
    torch.manual_seed(0)
    draws = synthetic_preferences(torch.full((20_000,), 1.0), torch.zeros(20_000), temperature=2.0)
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert float(draws.mean()) == pytest.approx(0.6225, abs=0.01)


def test_features_are_observations_with_one_hot_or_clipped_actions():
    discrete = reward_features(torch.zeros(2, 1), torch.tensor([0, 1]), gym.spaces.Discrete(2))
    assert discrete.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    box = reward_features(torch.ones(2, 1), torch.tensor([[3.0], [-0.5]]), gym.spaces.Box(-2.0, 2.0, (1,)))
    assert box.tolist() == [[1.0, 2.0], [1.0, -0.5]]


def test_the_bradley_terry_loss_of_a_model_that_predicts_zero_is_log_2_and_accuracy_counts_decided_pairs():
    ensemble = RewardEnsemble(2, [4], members=2)
    for parameter in ensemble.parameters():
        torch.nn.init.zeros_(parameter)
    comparisons = Comparisons(torch.randn(5, 2, 3, 2), torch.zeros(5, 2), torch.tensor([1.0, 0.0, 1.0, 0.5, 1.0]))
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.0)
    assert fit_reward_model(ensemble, optimizer, comparisons, steps=2, batch_size=4) == pytest.approx(math.log(2))
    predicted_first, predicted_second = torch.tensor([2.0, 0.0, 1.0, 5.0, 0.0]), torch.tensor([1.0, 1.0, 3.0, 0.0, 0.0])
    # decided pairs 0, 1, 2, 4: right, right, wrong, wrong (a tie is not a preference)
    assert agreement(predicted_first, predicted_second, comparisons.prob_first) == 0.5
    assert correlation(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])) == pytest.approx(0.9933, abs=1e-4)


def _random_pendulum_experience(seed: int, num_envs: int = 4, steps: int = 400):
    """A uniformly random policy's (features, true rewards, episode ends), each (N, T, ...)."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1") for _ in range(num_envs)])
    envs.action_space.seed(seed)
    observations, _ = envs.reset(seed=seed)
    rows = []
    for _ in range(steps):
        actions = envs.action_space.sample()
        next_observations, rewards, terminated, truncated, _ = envs.step(actions)
        rows.append((observations, actions, rewards, terminated | truncated))
        observations = next_observations
    envs.close()
    obs, actions, rewards, ends = (torch.as_tensor(np.stack(column, 1)) for column in zip(*rows))
    spec = inspect_env("Pendulum-v1")
    return reward_features(obs, actions, spec.action_space), rewards.float(), ends


def test_a_reward_model_fitted_to_200_labels_ranks_held_out_segments_by_their_true_return():
    torch.manual_seed(0)
    config = RewardConfig(kind="preferences")
    features, rewards, ends = _random_pendulum_experience(seed=1)
    comparisons = label_pairs(features, rewards, ends, 200, config)
    assert len(comparisons) == 200 and comparisons.features.shape == (200, 2, 25, 4)
    assert set(comparisons.prob_first.unique().tolist()) <= {0.0, 0.5, 1.0}

    held_out_features, held_out_rewards, held_out_ends = _random_pendulum_experience(seed=2)
    starts = segment_starts(held_out_ends, 25)
    true_returns = cut_segments(held_out_rewards, starts, 25).sum(-1)
    ensemble = RewardEnsemble(4, config.hidden_sizes, members=2)
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.learning_rate)

    def held_out_correlation() -> float:
        with torch.no_grad():
            return correlation(ensemble(cut_segments(held_out_features, starts, 25)).mean(0).sum(-1), true_returns)

    before = held_out_correlation()
    fit_reward_model(ensemble, optimizer, comparisons, steps=100, batch_size=32)
    after = held_out_correlation()
    assert after > 0.9 and after - before > 0.3, (before, after)  # 0.96 from -0.57 (seed 0)


def _rollout(features: torch.Tensor, rewards: torch.Tensor, ends: torch.Tensor) -> Rollout:
    n, t = rewards.shape
    zeros = torch.zeros(n, t)
    return Rollout(features[..., :3], features[..., 3:], zeros, zeros, rewards.clone(), zeros, ends, ends)


def test_relabel_hides_the_true_reward_and_a_restored_state_continues_exactly():
    spec = inspect_env("Pendulum-v1")
    config = RewardConfig(kind="preferences", comparisons=40, train_steps=5)
    features, rewards, ends = _random_pendulum_experience(seed=3, num_envs=2, steps=100)
    torch.manual_seed(0)
    preferences = PreferenceReward(config, spec, total_updates=4)
    rollout = _rollout(features, rewards, ends)
    metrics = preferences.relabel(rollout, update=1)
    assert metrics["reward/comparisons"] == 10 and len(preferences.comparisons) == 10  # 25 % of 40
    assert not torch.equal(rollout.rewards, rewards)
    assert abs(float(rollout.rewards.mean())) < 1e-4 and float(rollout.rewards.std()) == pytest.approx(1.0, abs=0.01)

    tensors, state = copy.deepcopy(preferences.checkpoint_state())  # as the checkpoint file holds it
    torch_state = torch.get_rng_state()
    restored = PreferenceReward(config, spec, total_updates=4)
    restored.load_checkpoint_state(tensors, state)
    results = []
    for model in (preferences, restored):
        torch.set_rng_state(torch_state)
        second = _rollout(features, rewards, ends)
        results.append((model.relabel(second, update=2), second.rewards))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    assert results[0][0]["reward/comparisons"] == comparisons_due(2, 4, config)


@pytest.mark.parametrize(
    ("key", "value"),
    [("kind", "human"), ("comparisons", 0), ("segment_steps", 0), ("temperature", -1.0), ("initial_fraction", 1.5)],
)
def test_bad_reward_keys_are_refused_naming_the_key(key, value):
    with pytest.raises(UserError, match=f"reward.{key}"):
        RewardConfig(**{key: value})


# ---------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------

# 3 updates of 2 envs x 100 steps, 20 labels of 20-step segments, a few Adam steps of the reward model.
TINY = [
    "reward.kind=preferences",
    "env.num_envs=2",
    "ppo.rollout_steps=100",
    "train.mini_batch_size=200",
    "train.ppo_epochs=1",
    "train.total_timesteps=600",
    "train.checkpoint_every=1",
    "reward.comparisons=20",
    "reward.segment_steps=20",
    "reward.train_steps=5",
    "eval.episodes=1",
    "seed=2",
]
# The same run with enough labels and steps for the reward model to learn (0.91 held-out correlation, seed 2).
LEARNING = [*TINY, "reward.comparisons=100", "reward.train_steps=80", "reward.batch_size=32"]


def _gym(out, settings: list[str], *extra: str) -> int:
    return run_gym("Pendulum-v1", out, settings, *extra)


@pytest.fixture(scope="module")
def preference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("preferences") / "run"
    assert _gym(out, LEARNING) == 0
    return out


def test_a_preference_run_reports_its_comparisons_beside_the_true_evaluation(preference_run):
    summary = json.loads((preference_run / "summary.json").read_text())
    assert summary["comparisons"] == 100 and summary["updates"] == 3
    assert -2000 < summary["eval_return_mean"] < 0  # Pendulum's own (true) reward: never positive
    config = yaml.safe_load((preference_run / "config.yaml").read_text())
    assert config["reward"]["kind"] == "preferences"
    # the Box defaults normalise; the reward model reads raw observations, so a preference run does not
    assert config["env"]["normalize_observation"] is False and config["env"]["normalize_reward"] is False
    records = read_jsonl(preference_run / "metrics.jsonl")
    assert [r["reward/comparisons"] for r in records] == [25, comparisons_due(2, 3, RewardConfig(comparisons=100)), 100]
    assert (preference_run / "final/reward_model.safetensors").is_file()


def test_the_learned_reward_ranks_held_out_segments_by_their_true_return(preference_run):
    config = RewardConfig(kind="preferences")
    ensemble = RewardEnsemble(4, config.hidden_sizes, config.ensemble)
    ensemble.load_state_dict(load_file(str(preference_run / "final/reward_model.safetensors")))
    features, rewards, ends = _random_pendulum_experience(seed=5)
    starts = segment_starts(ends, 20)
    with torch.no_grad():
        predicted = ensemble(cut_segments(features, starts, 20)).mean(0).sum(-1)
    assert correlation(predicted, cut_segments(rewards, starts, 20).sum(-1)) > 0.8


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["reward.kind=preferences", "reward.comparisons=0"], "reward.comparisons must be >= 1"),
        (["reward.kind=human"], "reward.kind 'human'"),
        (["reward.comparisons=10"], "reward.kind=preferences"),  # a key that the environment's reward ignores
        (["reward.kind=preferences", "env.normalize_observation=true"], "env.normalize_observation"),
        (["reward.kind=preferences", "ppo.rollout_steps=16", "train.mini_batch_size=16"], "reward.segment_steps 25"),
    ],
)
def test_bad_preference_settings_exit_2_with_one_line_and_write_nothing(settings, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert _gym(out, settings) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_interrupted_preference_run_resumes_bitwise_with_its_comparisons_and_reward_model(tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _gym(straight, TINY) == 0
    interrupt_at_call(monkeypatch, preferences_module, "fit_reward_model", 3)  # fitting for update 3: after step-2
    assert _gym(resumed, TINY) == 130
    monkeypatch.undo()
    assert main(["gym", "--resume", "--out", str(resumed), "--set", "reward.kind=environment"]) == 2
    assert main(["gym", "--resume", "--out", str(resumed)]) == 0

    assert without_timing(read_jsonl(straight / "metrics.jsonl")) == without_timing(
        read_jsonl(resumed / "metrics.jsonl")
    )
    for name in ("policy", "reward_model"):
        assert (straight / f"final/{name}.safetensors").read_bytes() == (
            resumed / f"final/{name}.safetensors"
        ).read_bytes()
    straight_tensors, straight_state = load_checkpoint(straight / "checkpoints/step-3")
    resumed_tensors, resumed_state = load_checkpoint(resumed / "checkpoints/step-3")
    for name in ("comparisons", "reward_model", "reward_stats"):
        for key, tensor in straight_tensors[name].items():
            assert torch.equal(tensor, resumed_tensors[name][key]), (name, key)
    for key, moments in straight_state["reward_optimizer"]["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, resumed_state["reward_optimizer"]["state"][key][name]), (key, name)
    assert json.loads((resumed / "summary.json").read_text())["comparisons"] == 20
