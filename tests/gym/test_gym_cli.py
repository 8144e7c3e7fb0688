"""`rlhfkit gym`: the output-directory contract, `--eval DIR`, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest
import yaml

from rlhfkit.cli import main
from rlhfkit.tracking import read_jsonl

# 2 updates of 4 envs x 64 steps.
SMALL = ["--set", "train.total_timesteps=512", "--set", "ppo.rollout_steps=64", "--set", "eval.episodes=3"]


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cartpole")
    assert main(["gym", "--env", "CartPole-v1", "--out", str(out), *SMALL]) == 0
    return out


def test_training_writes_every_file_of_the_contract(cartpole_run):
    out = cartpole_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["env"]["id"] == "CartPole-v1" and config["train"]["total_timesteps"] == 512
    assert config["ppo"]["clip_range"] == 0.2 and config["ppo"]["lam"] == 0.95
    assert config["train"]["ppo_epochs"] == 4 and config["train"]["mini_batch_size"] == 128
    assert config["optim"]["learning_rate"] == 2.5e-4 and config["optim"]["schedule"] == "linear"

    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for key in (
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/env_steps",
        "policy/loss",
        "value/loss",
        "policy/entropy",
        "policy/clipfrac",
        "policy/approx_kl",
        "value/explained_variance",
        "optim/learning_rate",
        "time/steps_per_second",
    ):
        assert records[-1][key] is not None, key
    assert [r["charts/env_steps"] for r in records] == [256, 512]
    assert [r["optim/learning_rate"] for r in records] == [2.5e-4, 1.25e-4]  # annealed: lr * (1 - (u - 1) / 2)

    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = out / "checkpoints/step-2"
    assert (checkpoint / "trainable.safetensors").is_file() and (checkpoint / "state.pt").is_file()
    assert (out / "final/policy.safetensors").is_file()
    for plot in ("learning_curve.png", "training.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 512 and summary["updates"] == 2 and summary["eval_episodes"] == 3
    assert summary["eval_return_mean"] >= 1 and summary["eval_return_std"] >= 0


def test_eval_dir_prints_the_same_evaluation_as_the_training_summary(cartpole_run, capsys):
    capsys.readouterr()
    assert main(["gym", "--eval", str(cartpole_run)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((cartpole_run / "summary.json").read_text())
    # Same policy, same evaluation seed, deterministic actions: the same episodes.
    assert printed["eval_return_mean"] == summary["eval_return_mean"]
    assert printed["eval_return_std"] == summary["eval_return_std"]
    assert json.loads((cartpole_run / "eval/eval.json").read_text()) == printed


def test_eval_dir_records_a_video(cartpole_run, tmp_path, capsys):
    pytest.importorskip("pygame")
    from PIL import Image

    assert (
        main(
            [
                "gym",
                "--eval",
                str(cartpole_run),
                "--set",
                "eval.episodes=1",
                "--set",
                "eval.video=true",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    length = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["eval_length_mean"]
    with Image.open(tmp_path / "eval.gif") as gif:
        assert gif.size == (600, 400)
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    # The first observation, then one frame per step, at CartPole's 50 fps (Pillow merges repeated frames).
    assert sum(durations) == (length + 1) * 20


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "NoSuchEnv-v0"], "env.id 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist."),
        (["--env", "RlhfkitTest/MultiDiscreteAction-v0"], "supports Discrete (categorical policy) and float Box"),
        (
            ["--set", "train.mini_batch_size=100"],
            "train.mini_batch_size 100 does not divide the batch env.num_envs * ppo.rollout_steps = 4 * 128 = 512",
        ),
        (["--set", "ppo.gamma=1.5"], "ppo.gamma must be in [0, 1], got 1.5"),
        (["--set", "ppo.nonsense=1"], "unknown config key 'ppo.nonsense'"),
        (["--resume"], "--resume: --out is missing; name the run to continue with --out DIR"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    extra = [] if "--resume" in argv else ["--out", str(out)]
    assert main(["gym", *argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_existing_run_is_not_overwritten_without_resume(cartpole_run, capsys):
    assert main(["gym", "--out", str(cartpole_run), *SMALL]) == 2
    assert "already holds a run; pass --resume to continue it" in capsys.readouterr().err


def test_eval_of_a_directory_without_a_run_exits_2(tmp_path, capsys):
    assert main(["gym", "--eval", str(tmp_path)]) == 2
    assert "config.yaml does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "old, new",
    [
        ("ppo.epochs=2", "config key 'ppo.epochs' is now 'train.ppo_epochs'"),
        ("ppo.num_minibatches=4", "config key 'ppo.num_minibatches' is now 'train.mini_batch_size' (rows per"),
        ("ppo.gae_lambda=0.9", "config key 'ppo.gae_lambda' is now 'ppo.lam'"),
        ("ppo.learning_rate=1e-3", "config key 'ppo.learning_rate' is now 'optim.learning_rate'"),
        ("ppo.max_grad_norm=1", "config key 'ppo.max_grad_norm' is now 'optim.max_grad_norm'"),
        ("ppo.anneal_lr=false", "config key 'ppo.anneal_lr' is now 'optim.schedule'"),
    ],
)
def test_renamed_keys_are_refused_naming_the_new_key_from_set_and_from_a_config_file(old, new, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["gym", "--set", old, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--set: {new}" in err and len(err.splitlines()) == 1

    key, _, value = old.partition("=")
    section, leaf = key.split(".")
    config_file = tmp_path / "old.yaml"
    config_file.write_text(f"seed: 1\n{section}:\n  clip_range: 0.2\n  {leaf}: {value}\n")
    assert main(["gym", "--config", str(config_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"config file {config_file}: {new}" in err and len(err.splitlines()) == 1
    assert not out.exists()
