"""A run interrupted after k updates and resumed by `--resume --out DIR` alone ends bitwise equal to an unbroken one."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from gym_runs import interrupt_at_call, run_gym, without_timing

import rlhfkit.gym.updates as updates
import rlhfkit.recipes.gym as recipe
from rlhfkit.checkpoint import load_checkpoint
from rlhfkit.cli import main
from rlhfkit.tracking import read_jsonl

# Pendulum covers the Gaussian policy, both normalisers and a time-limit truncation
# (its episodes are cut at 200 steps; each env has taken 256 when the interrupted run's
# last checkpoint is written, so the resumed run continues an episode 56 steps in).
CASES = {
    "CartPole-v1": ["env.num_envs=2", "ppo.rollout_steps=32", "train.mini_batch_size=32"],
    "Pendulum-v1": ["env.num_envs=2", "ppo.rollout_steps=64", "train.mini_batch_size=64"],
}
# Keys away from their defaults, which the resumed run must take from the run's config.yaml.
COMMON = [
    "train.ppo_epochs=2",
    "ppo.lam=0.9",
    "ppo.value_clip_range=0.5",
    "optim.max_grad_norm=1.0",
    "train.checkpoint_every=2",
    "eval.episodes=2",
    "seed=3",
]
UPDATES = 6


def _train(env_id: str, out, interrupt_at_update: int | None = None, monkeypatch=None) -> int:
    settings = CASES[env_id] + COMMON
    batch = 2 * int(settings[1].split("=")[1])
    settings.append(f"train.total_timesteps={UPDATES * batch}")
    if interrupt_at_update is not None:
        interrupt_at_call(monkeypatch, updates, "ppo_epochs", interrupt_at_update)
    return run_gym(env_id, out, settings)


@pytest.mark.parametrize("env_id", list(CASES))
def test_interrupted_and_resumed_run_equals_uninterrupted_run(env_id, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(env_id, straight) == 0

    # Interrupted while computing update 5: the last checkpoint is step-4, update 5 is done again.
    assert _train(env_id, resumed, interrupt_at_update=5, monkeypatch=monkeypatch) == 130
    monkeypatch.undo()
    assert [r["step"] for r in read_jsonl(resumed / "metrics.jsonl")] == [1, 2, 3, 4]
    assert not (resumed / "final").exists()
    assert main(["gym", "--resume", "--out", str(resumed)]) == 0

    straight_config, resumed_config = (yaml.safe_load((d / "config.yaml").read_text()) for d in (straight, resumed))
    assert {**resumed_config, "out": ""} == {**straight_config, "out": ""}  # the run's own keys, not the defaults
    assert resumed_config["ppo"]["lam"] == 0.9 and resumed_config["train"]["ppo_epochs"] == 2
    assert (straight / "final/policy.safetensors").read_bytes() == (resumed / "final/policy.safetensors").read_bytes()
    assert without_timing(read_jsonl(straight / "metrics.jsonl")) == without_timing(
        read_jsonl(resumed / "metrics.jsonl")
    )
    _, straight_state = load_checkpoint(straight / f"checkpoints/step-{UPDATES}")
    _, resumed_state = load_checkpoint(resumed / f"checkpoints/step-{UPDATES}")
    for key, moments in straight_state["optimizer"]["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, resumed_state["optimizer"]["state"][key][name]), (key, name)
    assert straight_state["scheduler"] == resumed_state["scheduler"]
    assert (straight_state["runner"]["observations"] == resumed_state["runner"]["observations"]).all()
    straight_summary, resumed_summary = (json.loads((d / "summary.json").read_text()) for d in (straight, resumed))
    for key in ("eval_return_mean", "eval_return_std", "env_steps", "updates"):
        assert straight_summary[key] == resumed_summary[key], key


def test_box_action_space_gets_the_continuous_defaults_under_explicit_settings(tmp_path):
    assert _train("Pendulum-v1", tmp_path / "run") == 0
    config = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert config["env"]["normalize_observation"] is True and config["env"]["normalize_reward"] is True
    assert config["optim"]["learning_rate"] == 3e-4 and config["ppo"]["entropy_coef"] == 0.0  # CONTINUOUS_DEFAULTS
    assert config["ppo"]["rollout_steps"] == 64 and config["train"]["ppo_epochs"] == 2  # --set wins over them
    assert config["train"]["mini_batch_size"] == 64
    assert (tmp_path / "run/final/obs_normalizer.safetensors").is_file()


def test_a_minibatch_that_divides_only_the_box_batch_is_accepted_for_a_box_environment():
    # 2048 rows divide the Box batch (1 env x 2048 steps), not the Discrete defaults' 4 x 128 = 512.
    config = recipe.new_run_config(None, ["env.id=Pendulum-v1", "train.mini_batch_size=2048"])
    assert config.batch_size == 2048 and config.train.mini_batch_size == 2048
