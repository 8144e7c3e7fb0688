"""`rlhfkit loop` with a reward-model judge loads that model once: the PPO monitor's gold judge is the loop's own.

The loader (`rlhfkit.rewards.model_reward`) is replaced by one that counts its calls and hands out a scorer.
"""

from __future__ import annotations

import pytest
from test_loop import QUICK

import rlhfkit.rewards
from rlhfkit.config import load_config
from rlhfkit.configs.loop import LoopConfig
from rlhfkit.loop.rounds import OnlineLoop


@pytest.fixture
def loads(monkeypatch):
    """The (directory, dtype) of every reward model loaded."""
    calls = []

    def model_reward(directory, batch_size, dtype, device="cpu"):
        calls.append((directory, dtype))
        return lambda prompts, responses, records: [0.0] * len(responses)

    monkeypatch.setattr(rlhfkit.rewards, "model_reward", model_reward)
    return calls


def online_loop(tiny_model_dir, tmp_path, *extra):
    sets = [f"model.name={tiny_model_dir}", *QUICK, "judge.kind=model", f"judge.model={tmp_path / 'judge'}", *extra]
    return OnlineLoop(load_config(LoopConfig, None, sets), tmp_path / "run")


def test_the_monitor_scores_with_the_loops_judge_loaded_once(tiny_model_dir, tmp_path, loads):
    loop = online_loop(tiny_model_dir, tmp_path, "monitor.enabled=true", "monitor.num_prompts=2")
    assert loads == [(str(tmp_path / "judge"), loop.runtime.precision)]  # at the run's settled precision
    assert loop.ppo.watch.gold is loop.gold


@pytest.mark.parametrize("monitor", [["monitor.enabled=false"], ["monitor.enabled=true", "monitor.gold=length"]])
def test_without_the_monitor_or_with_its_own_gold_judge_the_loops_judge_loads_once(
    tiny_model_dir, tmp_path, loads, monitor
):
    loop = online_loop(tiny_model_dir, tmp_path, "monitor.num_prompts=2", *monitor)
    assert loads == [(str(tmp_path / "judge"), loop.runtime.precision)]
