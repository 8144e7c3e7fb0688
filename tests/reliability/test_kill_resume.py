"""SIGKILL at any point of any trainer, then rerun: the result is bitwise the uninterrupted run's.

Each trainer (SFT, RM, DPO, PPO, Gym) runs once straight through the CLI in a subprocess, the
reference. A second run into another directory is killed with SIGKILL three times in a row, each
time restarted the way a user would (`--resume --out DIR` where a checkpoint exists, else the
same command afresh), and then allowed to finish:

    1 at a seeded random moment after the first or second metrics line (inside a step or an evaluation)
    2 the moment a checkpoint is being written (`checkpoints/.tmp-step-N` exists)
    3 the moment `final/` is being written (`.tmp-final` exists)

A kill that comes too late (the run already finished) only means that restart has nothing left
to do. At the end every tensor in `final/*.safetensors` must equal the reference's bit for bit,
and metrics.jsonl must log each step 0..N exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.checkpoint import list_checkpoints
from rlhfkit.models.tiny import build_tiny_model

STEPS = 4
GYM_UPDATES = 4
GYM_BATCH = 2 * 16  # env.num_envs x ppo.rollout_steps
TOPICS = "cat dog food movie book weather".split()
POSITIVE = "good great happy love wonderful joy".split()
NEGATIVE = "bad sad awful hate terrible pain".split()
POLL_S = 0.002


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=32))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Demonstrations, comparisons and prompts, small enough for a few steps of each trainer."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    rows = {
        "demos": [{"prompt": f"tell me about the {t}", "response": " ".join(POSITIVE[:4])} for t in TOPICS],
        "pairs": [
            {
                "prompt": f"tell me about the {t}",
                "chosen": f"the {t} is " + " ".join(rng.sample(POSITIVE, 2)),
                "rejected": f"the {t} is " + " ".join(rng.sample(NEGATIVE, 2)),
            }
            for t in TOPICS * 2
        ],
        "prompts": [{"prompt": f"say something about the {t}"} for t in TOPICS],
    }
    for name, records in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def command(trainer: str, tiny: str, data: Path) -> list[str]:
    """The CLI arguments of a tiny run of `trainer` that checkpoints after every step."""
    model = [f"model.name={tiny}", "model.dtype=float32", "train.checkpoint_every=1", "seed=5"]
    settings = {
        "sft": [f"data.train={data / 'demos.jsonl'}", f"train.steps={STEPS}", "train.batch_size=2",
                "train.eval_samples=0", "optim.learning_rate=0.01"],
        "rm": [f"data.train={data / 'pairs.jsonl'}", f"train.steps={STEPS}", "train.batch_size=2",
               "train.eval_every=2", "data.eval_fraction=0.25", "normalize.num_prompts=4",
               "normalize.generation.max_new_tokens=3", "optim.learning_rate=0.003"],
        "dpo": [f"data.train={data / 'pairs.jsonl'}", f"train.steps={STEPS}", "train.batch_size=2",
                "train.eval_every=2", "train.kl_prompts=2", "data.max_length=14",
                "generation.max_new_tokens=3", "optim.learning_rate=0.001"],
        "ppo": [f"data.prompts={data / 'prompts.jsonl'}", f"train.steps={STEPS}", "train.batch_size=4",
                "train.mini_batch_size=2", "generation.max_new_tokens=4", "reward.kind=length",
                "optim.learning_rate=0.01"],
    }  # fmt: skip
    if trainer == "gym":
        gym = ["env.num_envs=2", "ppo.rollout_steps=16", "train.mini_batch_size=16", "train.ppo_epochs=1",
               f"train.total_timesteps={GYM_UPDATES * GYM_BATCH}", "train.checkpoint_every=1", "eval.episodes=1",
               "seed=5"]  # fmt: skip
        return ["gym", "--env", "CartPole-v1", *[arg for s in gym for arg in ("--set", s)]]
    return [trainer, *[arg for s in model + settings[trainer] for arg in ("--set", s)]]


def environment() -> dict[str, str]:
    """One thread (bitwise reproducible and gentle on a shared machine), the test's import path, no TensorBoard."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RLHFKIT_REPORT_TO="none")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def start(arguments: list[str], out: Path) -> subprocess.Popen:
    """The run into `out`: resumed where a checkpoint exists, else started afresh (what a user would do)."""
    resume = ["--resume"] if list_checkpoints(out) else []
    return subprocess.Popen(
        [sys.executable, "-m", "rlhfkit", *arguments, *resume, "--out", str(out)],
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-3000:]


def kill_when(process: subprocess.Popen, ready) -> bool:
    """SIGKILL `process` as soon as `ready()` holds; False if it exited first (it must then have succeeded)."""
    while process.poll() is None:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.communicate()
            return True
        time.sleep(POLL_S)
    finish(process)
    return False


def being_written(out: Path, pattern: str):
    """True once a temporary directory matching `pattern` appears (not one an earlier kill left behind)."""

    def inodes() -> set[int]:
        return {path.stat().st_ino for path in out.glob(pattern) if path.exists()}

    left_behind = inodes()
    return lambda: bool(inodes() - left_behind)


def at_a_random_point(out: Path, rng: random.Random):
    """True a seeded random 0-0.3 s after the first or second line of metrics.jsonl: mid-step, mid-evaluation."""
    lines, delay, since = rng.choice([1, 2]), rng.uniform(0.0, 0.3), []

    def ready() -> bool:
        metrics = out / "metrics.jsonl"
        if not since and metrics.exists() and metrics.read_text().count("\n") >= lines:
            since.append(time.monotonic())
        return bool(since) and time.monotonic() - since[0] >= delay

    return ready


def final_tensors(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    files = sorted((out / "final").glob("*.safetensors"))
    assert files, f"{out / 'final'} holds no safetensors"
    return {file.name: load_file(str(file)) for file in files}


def logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("trainer", ["sft", "rm", "dpo", "ppo", "gym"])
def test_sigkill_anywhere_then_rerun_ends_bitwise_equal_to_an_unbroken_run(trainer, tiny, data, tmp_path):
    arguments = command(trainer, tiny, data)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    unbroken = start(arguments, reference)  # runs beside the killed one (two cores), finished before comparing

    rng = random.Random(f"kill-{trainer}")
    landed = [kill_when(start(arguments, killed), at_a_random_point(killed, rng))]
    # the final/ write is the same write_directory_atomic for every trainer: killed there once, in PPO
    for pattern in ("checkpoints/.tmp-step-*", ".tmp-final") if trainer == "ppo" else ("checkpoints/.tmp-step-*",):
        landed.append(kill_when(start(arguments, killed), being_written(killed, pattern)))
    if not (killed / "summary.json").exists():
        finish(start(arguments, killed))

    finish(unbroken)
    assert landed[0] or landed[1], "no kill landed mid-run: the test proved nothing"
    expected, resumed = final_tensors(reference), final_tensors(killed)
    assert expected.keys() == resumed.keys()
    for name, tensors in expected.items():
        assert tensors.keys() == resumed[name].keys(), name
        for key, tensor in tensors.items():
            assert torch.equal(tensor, resumed[name][key]), f"{trainer}: {name}:{key} differs after the kills"
    steps = logged_steps(reference)  # 0 is the evaluation before the first step, where the trainer has one
    assert steps[-1] == (GYM_UPDATES if trainer == "gym" else STEPS) and steps == sorted(set(steps))
    assert logged_steps(killed) == steps
