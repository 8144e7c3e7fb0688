"""`rlhfkit gym`: the road to PPO on a Gymnasium environment: REINFORCE, A2C, TRPO or PPO (`algorithm`).

One step of the run (`rlhfkit.runtime.fit`) is one update:

    1. run pi_old in N environments for T steps (`EnvRunner`: the same rollout for every algorithm)
    2. update the actor-critic on it by the chosen algorithm (`rlhfkit.gym.updates.UPDATES`):
         reinforce  Monte-Carlo returns (minus V with reinforce.baseline), one gradient step
         a2c        GAE(gamma, lambda) advantages, one gradient step on the actor-critic loss
         trpo       natural gradient within a KL trust region, then V fitted by Adam epochs
         ppo        K epochs of minibatch steps on the clipped surrogate + value loss - entropy bonus
                    (`algorithms.ppo_epochs`, the update driver of the language-model PPO too)
    3. step the learning-rate schedule (PPO anneals it linearly to 0 by default)
then the final policy is evaluated for summary.json. The math and the keys are the language-model
PPO's (`rlhfkit.algorithms`; `train.ppo_epochs`, `train.mini_batch_size`, `ppo.lam`, `optim.*`).

Where this departs from the papers' text, and why:
  - Truncation (a time limit) is bootstrapped with V(final observation), not treated as
    termination (Pardo et al. 2018); the PPO paper's code did the latter.
  - PPO whitens advantages per minibatch, clips the global gradient norm and uses Adam's epsilon
    1e-5: all from the paper's own code (baselines ppo2), as Stable-Baselines3 does.
  - PPO's value loss is unclipped unless `ppo.value_clip_range` is set: Andrychowicz et al. (2021)
    found value clipping does not help. The clip range is constant (the Atari runs annealed it).
  - A2C steps Adam, not the A3C paper's shared RMSprop: one optimiser for the whole family.
  - Each algorithm, and each on a Box action space, starts from its own defaults
    (`rlhfkit.gym.config.algorithm_defaults`, under any config file and --set); for Box action
    spaces those normalise observations and scale rewards (baselines' VecNormalize).
  - The MLPs compute on the CPU in one thread (unless runtime.threads says otherwise), whatever the
    runtime's device: for networks this small that was measured fastest, and a fixed thread count
    keeps runs reproducible.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import add_config_arguments
from rlhfkit.errors import UserError
from rlhfkit.gym.config import (
    GymConfig,
    describe_defaults,
    new_run_config,
    refuse_keys_of_other_algorithms,
    refuse_preference_keys_without_preferences,
    refuse_renamed_keys,
)
from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.evaluate import check_video, evaluate_run, evaluation_figures
from rlhfkit.gym.people import ServerPeople, connect_people
from rlhfkit.gym.policy import PolicySnapshot, build_policy, save_policy
from rlhfkit.gym.preferences import PreferenceReward, ResumePoint, refuse_another_reward_kind
from rlhfkit.gym.rollout import EnvRunner, episode_statistics
from rlhfkit.gym.updates import UPDATES
from rlhfkit.loop.server import TOKEN_ENV
from rlhfkit.runtime import RunDirectory, Runtime, StepOutput, fit, run_config
from rlhfkit.tracking import plot_metrics
from rlhfkit.training import load_training_state, lr_multiplier, training_state


class GymTrainer:
    """`config.algorithm` on `config.env.id`, validated at construction (before any output); `fit` runs it."""

    command = "gym"

    def __init__(self, config: GymConfig, runtime: Runtime | None = None, people: ServerPeople | None = None):
        torch.set_num_threads(config.runtime.threads or 1)
        self.config = config
        self.runtime = runtime or Runtime(seed=config.seed)
        # the rollout and the update run in one process: refuse N processes rather than train N times
        if self.runtime.num_processes > 1:
            raise UserError(
                f"rlhfkit gym runs in one process, got {self.runtime.num_processes}: start it without accelerate launch"
            )
        self.spec = inspect_env(config.env.id)
        env = config.env
        self.runner = EnvRunner(
            self.spec, env.num_envs, config.seed, env.normalize_observation, env.normalize_reward, config.ppo.gamma
        )
        self.policy = build_policy(config, self.spec)
        self.preferences = (
            PreferenceReward(config.reward, self.spec, config.num_updates, people)
            if config.reward.kind == "preferences"
            else None
        )
        self.algorithm = UPDATES[config.algorithm]
        self.plot_keys = self.algorithm.plot_keys
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.algorithm.adam_parameters(self.policy),
            optim.learning_rate,
            tuple(optim.betas),
            eps=1e-5,
            weight_decay=optim.weight_decay,
            fused=True,  # one kernel for all parameters: a PPO run takes thousands of small steps (RESULTS, session 7)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda update: lr_multiplier(update, optim.warmup_steps, config.num_updates, optim.schedule)
        )
        self.step, self.total_steps = 0, config.num_updates
        self.eval_every, self.checkpoint_every = 0, config.train.checkpoint_every
        self.train_seconds = 0.0

    def train_step(self) -> StepOutput:
        config, started = self.config, time.perf_counter()
        learning_rate = self.scheduler.get_last_lr()[0]
        # 1. run the policy for T steps in N environments (from a kept resume point if people label its segments)
        start = self.resume_point() if self.preferences and self.preferences.asks_people(self.step + 1) else None
        rollout, episodes = self.runner.collect(PolicySnapshot(self.policy), config.ppo.rollout_steps)
        # 1b. with reward.kind=preferences: new labels, the reward model refitted, its rewards in place of the env's
        reward_stats = self.preferences.relabel(rollout, self.step + 1, start) if self.preferences else {}
        # 2. the algorithm's update
        stats = self.algorithm.update(self.policy, self.optimizer, config, rollout)
        # 3. the learning-rate schedule, which counts updates (a REINFORCE update in which no episode
        # ended takes no optimiser step; torch's warning about that order does not apply)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step()`", UserWarning)
            self.scheduler.step()
        self.step += 1
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        return {
            **episode_statistics(episodes),
            "charts/env_steps": self.step * config.batch_size,
            **stats,
            **reward_stats,
            "optim/learning_rate": learning_rate,
            "time/steps_per_second": config.batch_size / seconds,
        }, None

    def evaluate(self) -> StepOutput:
        """Nothing between updates: the final policy is evaluated once, in `summary`."""
        return {}, None

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        """Policy, optimiser, schedule, algorithm, and the environments with normalisers and unfinished episodes."""
        tensors, state = training_state(self.policy, self.optimizer, self.scheduler)
        extra = {"runner": self.runner.state_dict(), "algorithm": self.config.algorithm}
        if self.preferences:
            reward_tensors, reward_state = self.preferences.checkpoint_state()
            tensors, extra = {**tensors, **reward_tensors}, {**extra, **reward_state}
        return tensors, {**state, **extra, "train_seconds": self.train_seconds}

    def resume_point(self) -> ResumePoint:
        """The checkpoint `fit` would write now, before this step (people's segments are replayed from it)."""
        tensors, state = self.checkpoint_state()
        return tensors, {**state, "step": self.step, "rng": self.runtime.rng_states()}

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        trained = state.get("algorithm", "ppo")  # checkpoints from before the algorithm key hold PPO
        if trained != self.config.algorithm:
            raise UserError(
                f"--resume: the run was trained with algorithm={trained}; algorithm={self.config.algorithm} "
                "needs a new run (another --out)"
            )
        refuse_another_reward_kind(self.config.reward.kind, tensors)
        load_training_state(tensors, state, self.policy, self.optimizer, self.scheduler)
        if self.preferences:
            self.preferences.load_checkpoint_state(tensors, state)
        self.runner.load_state_dict(state["runner"], reset_seed=self.config.seed + state["step"] * self.runner.num_envs)
        self.train_seconds = state["train_seconds"]

    def save_final(self, directory: Path) -> None:
        """policy.safetensors (+ obs_normalizer.safetensors): what `--eval` loads; reward_model.safetensors if any."""
        save_policy(directory, self.policy, self.runner.obs_normalizer)
        if self.preferences:
            self.preferences.save(directory)

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The final evaluation (and eval.gif), learning_curve.png, and the figures of the run."""
        config = self.config
        video = out / "eval.gif" if config.eval.video else None
        figures = evaluation_figures(self.policy, self.spec, self.runner.obs_normalizer, config, self.runtime, video)
        batch = f"{config.env.num_envs} x {config.ppo.rollout_steps}"
        keys = ("charts/episodic_return", "charts/episodic_length")
        title = f"{self.algorithm.title} on {config.env.id} (one step = one update of {batch} env steps)"
        plot_metrics(out / "metrics.jsonl", keys, out / "learning_curve.png", title=title)
        env_steps = self.step * config.batch_size
        return {
            "env_id": config.env.id,
            "env_steps": env_steps,
            "updates": self.step,
            **figures,
            **({"comparisons": len(self.preferences.comparisons)} if self.preferences else {}),
            "train_seconds": round(self.train_seconds, 2),
            "steps_per_second": round(env_steps / self.train_seconds, 1) if self.train_seconds > 0 else None,
        }

    def train(self, out: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
        """The Python API: the whole run into `out` (default: config.out); returns summary.json's figures."""
        return fit(self, RunDirectory.resolve(str(out or self.config.out), default_name(self.config), resume))


def default_name(config: GymConfig) -> str:
    """`runs/<this>-<time>` is the default output directory."""
    return f"gym-{config.env.id.replace('/', '-')}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, GymConfig)
    parser.add_argument("--env", help="Gymnasium environment id (same as --set env.id=ID)")
    parser.add_argument("--token", help=f"with reward.labeller=server: an admin's token (default: ${TOKEN_ENV})")
    parser.add_argument(
        "--eval",
        metavar="DIR",
        help="evaluate the policy of a finished run DIR instead of training (writes DIR/eval/ unless --out)",
    )
    defaults = "each algorithm starts from its own defaults (a config file and --set still override them)"
    parser.epilog = f"{parser.epilog or ''}\n\n{defaults}:\n{describe_defaults()}"


def run(args: argparse.Namespace) -> int | Path:
    overrides = ([f"env.id={args.env}"] if args.env else []) + list(args.set)
    refuse_renamed_keys(args.config, overrides)
    if args.eval:
        return run_evaluation(args, overrides)
    if args.resume:
        if any(item.partition("=")[0].strip() == "algorithm" for item in overrides):
            raise UserError("--resume continues a run with its own algorithm; for another, start a new run (--out)")
        config = run_config(GymConfig, argparse.Namespace(**{**vars(args), "set": overrides}))
    else:
        config = new_run_config(args.config, overrides + ([f"out={args.out}"] if args.out else []))
    refuse_keys_of_other_algorithms(config, args.config, overrides)
    refuse_preference_keys_without_preferences(config, args.config, overrides)
    run_directory = RunDirectory.resolve(config.out, default_name(config), args.resume)  # before any work
    if config.eval.video:
        check_video(config.env.id)
    people = connect_people(config.reward, config.env.id, run_directory.path, args.token)
    trainer = GymTrainer(config, people=people)
    try:
        summary = fit(trainer, run_directory)
    finally:
        trainer.runner.close()
    print(json.dumps(summary))
    print(f"run written to {run_directory.path}")
    return run_directory.path


def run_evaluation(args: argparse.Namespace, overrides: list[str]) -> int:
    """`--eval DIR`: the finished run's policy, evaluated under its own config.yaml (+ --config, --set)."""
    if args.resume or args.env:
        raise UserError(
            "--eval evaluates a finished run as it was trained; it cannot be combined with --resume or --env"
        )
    run_dir = Path(args.eval)
    figures = evaluate_run(run_dir, args.config, overrides, Path(args.out) if args.out else run_dir / "eval")
    print(json.dumps(figures))
    return 0
