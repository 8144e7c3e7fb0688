"""`rlhfkit gym`: PPO (Schulman et al. 2017, Algorithm 1) on a Gymnasium environment.

One step of the run (`rlhfkit.runtime.fit`) is one PPO update:

    1. run pi_old in N environments for T steps
    2. advantages A_1..A_T by GAE(gamma, lambda)
    3. K epochs of minibatch steps on the clipped surrogate + value loss - entropy bonus
       (`algorithms.ppo_epochs`, the update driver of the language-model PPO too)
    4. anneal the learning rate (linearly to 0 by default)
then the final policy is evaluated for summary.json. The math and the keys are the language-model
PPO's (`rlhfkit.algorithms`; `train.ppo_epochs`, `train.mini_batch_size`, `ppo.lam`, `optim.*`).

Where this departs from the paper's text, and why:
  - Truncation (a time limit) is bootstrapped with V(final observation), not treated as
    termination (Pardo et al. 2018); the paper's code did the latter.
  - Advantages are whitened per minibatch, the global gradient norm is clipped and Adam's epsilon
    is 1e-5: all from the paper's own code (baselines ppo2), as Stable-Baselines3 does.
  - The value loss is unclipped unless `ppo.value_clip_range` is set: Andrychowicz et al. (2021)
    found value clipping does not help. The clip range is constant (the Atari runs annealed it).
  - For Box action spaces, observations are normalised and rewards scaled by a running return std
    (baselines' VecNormalize), and the other defaults are the paper's MuJoCo settings
    (`rlhfkit.gym.config.CONTINUOUS_DEFAULTS`, under any config file and --set).
  - The MLPs compute on the CPU in one thread, whatever the runtime's device: for networks this
    small that was measured fastest, and a fixed thread count keeps runs reproducible.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algorithms import (
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    generalized_advantage_estimation,
    ppo_epochs,
    whiten,
)
from rlhfkit.config import add_config_arguments
from rlhfkit.errors import UserError
from rlhfkit.gym.config import CONTINUOUS_DEFAULTS, GymConfig, new_run_config, refuse_renamed_keys
from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.evaluate import check_video, evaluate_run, evaluation_figures
from rlhfkit.gym.policy import build_policy, save_policy
from rlhfkit.gym.rollout import EnvRunner, episode_statistics
from rlhfkit.runtime import RunDirectory, Runtime, StepOutput, fit, run_config
from rlhfkit.tracking import plot_metrics
from rlhfkit.training import load_training_state, lr_multiplier, training_state

Rows = dict[str, torch.Tensor]  # one PPO batch, a row per environment step: (N*T, ...)


class GymTrainer:
    """PPO on `config.env.id`, validated at construction (before any output); `rlhfkit.runtime.fit` runs it."""

    command = "gym"
    plot_keys = ("policy/approx_kl", "policy/clipfrac", "policy/entropy", "value/explained_variance")

    def __init__(self, config: GymConfig, runtime: Runtime | None = None):
        torch.set_num_threads(1)
        self.config = config
        self.runtime = runtime or Runtime(seed=config.seed)
        self.spec = inspect_env(config.env.id)
        env = config.env
        self.runner = EnvRunner(
            self.spec, env.num_envs, config.seed, env.normalize_observation, env.normalize_reward, config.ppo.gamma
        )
        self.policy = build_policy(config, self.spec)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), optim.learning_rate, tuple(optim.betas), eps=1e-5, weight_decay=optim.weight_decay
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
        # 1. run the policy for T steps in N environments
        rollout, episodes = self.runner.collect(self.policy, config.ppo.rollout_steps)
        # 2. advantages by GAE, truncated episodes bootstrapped from V(final observation)
        advantages, returns = generalized_advantage_estimation(
            rollout.rewards,
            rollout.values,
            rollout.next_values,
            rollout.terminated,
            rollout.episode_end,
            config.ppo.gamma,
            config.ppo.lam,
        )
        # 3. K epochs of minibatch updates
        train = config.train
        stats = ppo_epochs(
            config.batch_size,
            train.mini_batch_size,
            train.ppo_epochs,
            partial(self.minibatch_step, rollout.rows(advantages, returns)),
            config.ppo.target_kl,
        )
        # 4. anneal the learning rate
        self.scheduler.step()
        self.step += 1
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        return {
            **episode_statistics(episodes),
            "charts/env_steps": self.step * config.batch_size,
            **stats,
            "value/explained_variance": float(explained_variance(rollout.values, returns)),
            "optim/learning_rate": learning_rate,
            "time/steps_per_second": config.batch_size / seconds,
        }, None

    def minibatch_step(self, rows: Rows, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step on L^CLIP - c1 L^VF + c2 H over the rows `indices`; returns its statistics."""
        ppo = self.config.ppo
        logprobs, entropy, values = self.policy.evaluate(rows["observations"][indices], rows["actions"][indices])
        advantages = rows["advantages"][indices]
        if ppo.normalize_advantages:
            advantages = whiten(advantages)  # per minibatch, as the paper's code does
        policy_loss, policy_stats = clipped_policy_loss(
            logprobs, rows["logprobs"][indices], advantages, None, ppo.clip_range
        )
        value_loss, value_stats = clipped_value_loss(
            values, rows["values"][indices], rows["returns"][indices], None, ppo.value_clip_range
        )
        entropy = entropy.mean()
        loss = policy_loss + ppo.value_coef * value_loss - ppo.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        if self.config.optim.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.optim.max_grad_norm)
        self.optimizer.step()
        return {
            "policy/loss": policy_loss.detach(),
            "value/loss": value_loss.detach(),
            "policy/entropy": entropy.detach(),
            "policy/clipfrac": policy_stats["clipfrac"],
            "policy/approx_kl": policy_stats["approx_kl"],
            "value/clipfrac": value_stats["clipfrac"],
        }

    def evaluate(self) -> StepOutput:
        """Nothing between updates: the final policy is evaluated once, in `summary`."""
        return {}, None

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        """Policy, optimiser, schedule, and the environments with their normalisers and unfinished episodes."""
        tensors, state = training_state(self.policy, self.optimizer, self.scheduler)
        return tensors, {**state, "runner": self.runner.state_dict(), "train_seconds": self.train_seconds}

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        load_training_state(tensors, state, self.policy, self.optimizer, self.scheduler)
        self.runner.load_state_dict(state["runner"], reset_seed=self.config.seed + state["step"] * self.runner.num_envs)
        self.train_seconds = state["train_seconds"]

    def save_final(self, directory: Path) -> None:
        """policy.safetensors (+ obs_normalizer.safetensors): what `--eval` loads."""
        save_policy(directory, self.policy, self.runner.obs_normalizer)

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The final evaluation (and eval.gif), learning_curve.png, and the figures of the run."""
        config = self.config
        video = out / "eval.gif" if config.eval.video else None
        figures = evaluation_figures(self.policy, self.spec, self.runner.obs_normalizer, config, self.runtime, video)
        batch = f"{config.env.num_envs} x {config.ppo.rollout_steps}"
        keys = ("charts/episodic_return", "charts/episodic_length")
        title = f"PPO on {config.env.id} (one step = one update of {batch} env steps)"
        plot_metrics(out / "metrics.jsonl", keys, out / "learning_curve.png", title=title)
        env_steps = self.step * config.batch_size
        return {
            "env_id": config.env.id,
            "env_steps": env_steps,
            "updates": self.step,
            **figures,
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
    parser.add_argument(
        "--eval",
        metavar="DIR",
        help="evaluate the policy of a finished run DIR instead of training (writes DIR/eval/ unless --out)",
    )
    defaults = ", ".join(
        f"{section}.{key}={value}" for section, values in CONTINUOUS_DEFAULTS.items() for key, value in values.items()
    )
    box = "for Box action spaces these defaults apply instead (a config file and --set still override them)"
    parser.epilog = f"{parser.epilog or ''}\n\n{box}:\n  {defaults}"


def run(args: argparse.Namespace) -> int:
    overrides = ([f"env.id={args.env}"] if args.env else []) + list(args.set)
    refuse_renamed_keys(args.config, overrides)
    if args.eval:
        return run_evaluation(args, overrides)
    if args.resume:
        config = run_config(GymConfig, argparse.Namespace(**{**vars(args), "set": overrides}))
    else:
        config = new_run_config(args.config, overrides + ([f"out={args.out}"] if args.out else []))
    run_directory = RunDirectory.resolve(config.out, default_name(config), args.resume)  # before any work
    if config.eval.video:
        check_video(config.env.id)
    trainer = GymTrainer(config)
    try:
        summary = fit(trainer, run_directory)
    finally:
        trainer.runner.close()
    print(json.dumps(summary))
    print(f"run written to {run_directory.path}")
    return 0


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
