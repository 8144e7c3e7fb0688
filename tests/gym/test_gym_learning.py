"""PPO, A2C and TRPO with their default settings learn CartPole: a short run must move the return well above chance."""

from __future__ import annotations

import pytest

from rlhfkit.config import load_config
from rlhfkit.gym.config import new_run_config
from rlhfkit.recipes.gym import GymConfig, GymTrainer
from rlhfkit.tracking import read_jsonl


def test_short_cartpole_run_improves_its_return(tmp_path):
    cfg = load_config(GymConfig, overrides=["env.id=CartPole-v1", "train.total_timesteps=16384", "seed=0"])
    summary = GymTrainer(cfg).train(out=tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    first_returns = records[0]["charts/episodic_return"]
    # A uniformly random CartPole policy lasts about 22 steps. After 32 updates the sampling policy
    # lasts 2-4 times longer (this run: 20 -> 50-85), and its mode, which the evaluation
    # follows, about 8 times (this run: 172 of the 500 cap).
    assert first_returns < 30
    late = [r["charts/episodic_return"] for r in records[-8:] if r["charts/episodic_return"] is not None]
    assert sum(late) / len(late) > 2 * first_returns
    assert summary["eval_return_mean"] > 120


def _returns(records: list[dict]) -> list[float]:
    return [r["charts/episodic_return"] for r in records if r["charts/episodic_return"] is not None]


@pytest.mark.parametrize(
    "algorithm, timesteps",
    [
        ("a2c", 20_000),  # 500 updates of 8 envs x 5 steps (this run: late returns 289, evaluation 444)
        ("trpo", 12_288),  # 12 updates of 4 envs x 256 steps (this run: late returns 264, evaluation 460)
    ],
)
def test_a2c_and_trpo_raise_the_cartpole_return_within_a_small_budget(algorithm, timesteps, tmp_path):
    cfg = new_run_config(None, [f"algorithm={algorithm}", f"train.total_timesteps={timesteps}", "seed=0"])
    summary = GymTrainer(cfg).train(out=tmp_path)
    returns = _returns(read_jsonl(tmp_path / "metrics.jsonl"))
    # A uniformly random CartPole policy lasts about 22 steps.
    early, late = returns[: len(returns) // 8], returns[-len(returns) // 8 :]
    assert sum(early) / len(early) < 30
    assert sum(late) / len(late) > 4 * sum(early) / len(early)
    assert summary["eval_return_mean"] > 150
