"""`rlhfkit gym --set algorithm=...`: each algorithm runs through the CLI and resumes bitwise; bad keys exit 2."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from gym_runs import interrupt_at_call, run_gym, without_timing

from rlhfkit.checkpoint import load_checkpoint
from rlhfkit.cli import main
from rlhfkit.config import to_dict
from rlhfkit.gym.config import new_run_config, refuse_keys_of_other_algorithms
from rlhfkit.gym.rollout import EnvRunner
from rlhfkit.tracking import read_jsonl

UPDATES = 6
# (algorithm, environment): settings away from the defaults, which the resumed run must take from config.yaml.
CASES = {
    ("reinforce", "CartPole-v1"): ["env.num_envs=2", "ppo.rollout_steps=32", "ppo.gamma=0.95"],
    ("a2c", "CartPole-v1"): ["env.num_envs=2", "ppo.rollout_steps=8", "ppo.lam=0.9", "ppo.entropy_coef=0.01"],
    ("trpo", "CartPole-v1"): ["env.num_envs=2", "ppo.rollout_steps=32", "train.mini_batch_size=32", "trpo.max_kl=0.02"],
    # Gaussian policies, both normalisers, and episodes cut by Pendulum's 200-step time limit
    ("reinforce", "Pendulum-v1"): ["env.num_envs=2", "ppo.rollout_steps=128", "reinforce.baseline=true"],
    ("trpo", "Pendulum-v1"): [
        "env.num_envs=2",
        "ppo.rollout_steps=64",
        "train.mini_batch_size=64",
        "trpo.value_epochs=3",
    ],
}
COMMON = ["train.checkpoint_every=2", "eval.episodes=2", "seed=3"]


def _train(algorithm: str, env_id: str, out, interrupt_at_update: int | None = None, monkeypatch=None) -> int:
    settings = [f"algorithm={algorithm}", *CASES[algorithm, env_id], *COMMON]
    num_envs, steps = (int(s.split("=")[1]) for s in settings if s.startswith(("env.num_envs", "ppo.rollout_steps")))
    settings.append(f"train.total_timesteps={UPDATES * num_envs * steps}")
    if interrupt_at_update is not None:
        interrupt_at_call(monkeypatch, EnvRunner, "collect", interrupt_at_update)
    return run_gym(env_id, out, settings)


@pytest.mark.parametrize("algorithm, env_id", list(CASES))
def test_each_algorithm_runs_and_an_interrupted_run_resumes_bitwise(algorithm, env_id, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(algorithm, env_id, straight) == 0

    # Interrupted while collecting update 5: the last checkpoint is step-4, update 5 is done again.
    assert _train(algorithm, env_id, resumed, interrupt_at_update=5, monkeypatch=monkeypatch) == 130
    monkeypatch.undo()
    assert [r["step"] for r in read_jsonl(resumed / "metrics.jsonl")] == [1, 2, 3, 4]
    assert main(["gym", "--resume", "--out", str(resumed)]) == 0

    config = yaml.safe_load((resumed / "config.yaml").read_text())
    assert config["algorithm"] == algorithm
    straight_records = read_jsonl(straight / "metrics.jsonl")
    assert without_timing(straight_records) == without_timing(read_jsonl(resumed / "metrics.jsonl"))
    assert (straight / "final/policy.safetensors").read_bytes() == (resumed / "final/policy.safetensors").read_bytes()
    _, straight_state = load_checkpoint(straight / f"checkpoints/step-{UPDATES}")
    _, resumed_state = load_checkpoint(resumed / f"checkpoints/step-{UPDATES}")
    for key, moments in straight_state["optimizer"]["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, resumed_state["optimizer"]["state"][key][name]), (key, name)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["updates"] == UPDATES and summary["eval_episodes"] == 2
    # the algorithm's own statistics reach metrics.jsonl
    own_key = {"reinforce": "reinforce/complete_fraction", "a2c": "value/loss", "trpo": "trpo/step_fraction"}
    assert straight_records[-1][own_key[algorithm]] is not None


def test_each_algorithm_starts_from_its_own_defaults():
    a2c = new_run_config(None, ["algorithm=a2c"])
    assert (a2c.env.num_envs, a2c.ppo.rollout_steps, a2c.ppo.lam, a2c.optim.learning_rate) == (8, 5, 1.0, 7e-4)
    trpo = new_run_config(None, ["algorithm=trpo", "env.id=Pendulum-v1", "ppo.rollout_steps=512"])
    assert (trpo.env.num_envs, trpo.ppo.rollout_steps, trpo.env.normalize_observation) == (1, 512, True)
    assert trpo.trpo.max_kl == 0.01 and trpo.optim.learning_rate == 1e-3
    assert new_run_config(None, []).algorithm == "ppo"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "algorithm=sarsa"], "algorithm 'sarsa' is not one of reinforce, a2c, trpo, ppo"),
        (
            ["--set", "trpo.max_kl=0.02"],
            "--set: config key 'trpo.max_kl' is read by algorithm=trpo only, not by algorithm=ppo; remove it",
        ),
        (
            ["--set", "algorithm=a2c", "--set", "train.ppo_epochs=2"],
            "config key 'train.ppo_epochs' is read by algorithm=ppo only, not by algorithm=a2c",
        ),
        (
            ["--set", "algorithm=reinforce", "--set", "ppo.lam=0.9"],
            "config key 'ppo.lam' is read by algorithm=a2c or trpo or ppo only, not by algorithm=reinforce",
        ),
        (
            ["--set", "algorithm=trpo", "--set", "ppo.entropy_coef=0.01"],
            "config key 'ppo.entropy_coef' is read by algorithm=reinforce or a2c or ppo only, not by algorithm=trpo",
        ),
        (
            ["--set", "reinforce.baseline=false"],
            "config key 'reinforce.baseline' is read by algorithm=reinforce only, not by algorithm=ppo",
        ),
        (["--set", "algorithm=trpo", "--set", "trpo.max_kl=0"], "trpo.max_kl must be > 0, got 0.0"),
        (
            ["--set", "algorithm=trpo", "--set", "train.mini_batch_size=100"],
            "train.mini_batch_size 100 does not divide the batch env.num_envs * ppo.rollout_steps = 4 * 256 = 1024",
        ),
        (["--resume", "--set", "algorithm=trpo"], "--resume continues a run with its own algorithm"),
    ],
)
def test_bad_algorithm_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["gym", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_config_file_key_of_another_algorithm_is_refused_unless_it_holds_the_default(tmp_path, capsys):
    config_file = tmp_path / "a2c.yaml"
    config_file.write_text("algorithm: a2c\ntrain:\n  ppo_epochs: 8\n")
    assert main(["gym", "--config", str(config_file), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"config file {config_file}: config key 'train.ppo_epochs' is read by algorithm=ppo only" in err
    assert not (tmp_path / "never").exists()

    # A run's config.yaml holds every key, at its default where the algorithm does not read it: reusable.
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(to_dict(new_run_config(None, ["algorithm=a2c", "ppo.lam=0.9"]))))
    refuse_keys_of_other_algorithms(new_run_config(str(saved), []), str(saved), [])
