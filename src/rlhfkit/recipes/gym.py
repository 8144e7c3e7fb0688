"""`rlhfkit gym`: PPO (Schulman et al. 2017, Algorithm 1) on a Gymnasium environment.

    for update = 1, 2, ...:
        1. anneal the learning rate linearly to 0
        2. run pi_old in N environments for T steps
        3. advantages A_1..A_T by GAE(gamma, lambda)
        4. optimise the clipped surrogate + value loss - entropy bonus
           for K epochs of minibatches
        5. log, checkpoint
    then evaluate the final policy and write summary.json.

The math (GAE, the clipped losses, whitening, explained variance) is
`rlhfkit.algorithms`, the same functions the language-model PPO calls.

Where this departs from the paper's text, and why:
  - Truncation (a time limit) is bootstrapped with V(final observation), not
    treated as termination (Pardo et al. 2018); the paper's code did the latter.
  - Advantages are whitened per minibatch, the global gradient norm is clipped
    and Adam's epsilon is 1e-5: all from the paper's own code (baselines ppo2),
    and Stable-Baselines3 does the same.
  - The value loss is unclipped unless `ppo.value_clip_range` is set:
    Andrychowicz et al. (2021) found value clipping does not help.
  - The clip range is constant (the Atari runs annealed it).
  - For Box action spaces, observations are normalised and rewards scaled by
    a running return std (baselines' VecNormalize), and the other defaults
    are the paper's MuJoCo settings (`rlhfkit.gym.config.CONTINUOUS_DEFAULTS`, applied under
    any config file and --set, and written into config.yaml like every value).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from rlhfkit.algorithms import (
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    generalized_advantage_estimation,
    whiten,
)
from rlhfkit.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_directory_atomic,
)
from rlhfkit.config import add_config_arguments, load_config, save_config
from rlhfkit.errors import UserError
from rlhfkit.gym.config import CONTINUOUS_DEFAULTS, GymConfig, PPOConfig
from rlhfkit.gym.envs import EnvSpec, inspect_env
from rlhfkit.gym.evaluate import check_video, evaluate
from rlhfkit.gym.normalization import ObservationNormalizer
from rlhfkit.gym.policy import ActorCritic
from rlhfkit.gym.rollout import EnvRunner, Episode, Rollout
from rlhfkit.tracking import Tracker, plot_metrics, write_json_atomic

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes start from seed + this, apart from training's seed + i


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train(cfg: GymConfig, out: Path, resume: bool = False) -> dict[str, Any]:
    """PPO on `cfg.env.id`, writing the run to `out`; returns the summary (also written to summary.json)."""
    torch.set_num_threads(1)  # tiny MLPs: one thread is fastest, and a fixed count keeps runs reproducible
    spec = inspect_env(cfg.env.id)
    seed_everything(cfg.seed)
    runner = EnvRunner(
        spec, cfg.env.num_envs, cfg.seed, cfg.env.normalize_observation, cfg.env.normalize_reward, cfg.ppo.gamma
    )
    policy = _build_policy(cfg, spec)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.ppo.learning_rate, eps=1e-5)
    start, train_seconds = 0, 0.0
    if resume:
        start, train_seconds = _restore(out, policy, optimizer, runner, cfg.seed)
    save_config(cfg, out / "config.yaml")
    tracker = Tracker(out, cfg.num_updates, f"gym {cfg.env.id}", start_step=start)
    try:
        for update in range(start + 1, cfg.num_updates + 1):
            started = time.perf_counter()
            # 1. anneal the learning rate
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(cfg.ppo, update, cfg.num_updates)
            # 2. run the policy for T steps in N environments
            rollout, episodes = runner.collect(policy, cfg.ppo.rollout_steps)
            # 3. advantages by GAE, truncated episodes bootstrapped from V(final observation)
            advantages, returns = generalized_advantage_estimation(
                rollout.rewards,
                rollout.values,
                rollout.next_values,
                rollout.terminated,
                rollout.episode_end,
                cfg.ppo.gamma,
                cfg.ppo.gae_lambda,
            )
            # 4. K epochs of minibatch updates
            stats = ppo_update(policy, optimizer, rollout, advantages, returns, cfg.ppo, cfg.minibatch_size)
            # 5. log, checkpoint
            seconds = time.perf_counter() - started
            train_seconds += seconds
            tracker.log(update, _metrics(update, cfg, rollout, returns, episodes, stats, optimizer, seconds))
            if update % cfg.train.checkpoint_every == 0 or update == cfg.num_updates:
                state = {
                    "update": update,
                    "train_seconds": train_seconds,
                    "optimizer": optimizer.state_dict(),
                    "runner": runner.state_dict(),
                    "rng": rng_state(),
                }
                save_checkpoint(out, update, tensors={"policy": policy.state_dict()}, state=state)
    finally:
        tracker.close()
        runner.close()

    _save_final(out, policy, runner.obs_normalizer)
    results = evaluate(
        policy,
        spec,
        runner.obs_normalizer,
        cfg.eval.episodes,
        cfg.seed + EVAL_SEED_OFFSET,
        cfg.eval.deterministic,
        out / "eval.gif" if cfg.eval.video else None,
    )
    env_steps = cfg.num_updates * cfg.batch_size
    summary = {
        "env_id": cfg.env.id,
        "env_steps": env_steps,
        "updates": cfg.num_updates,
        **_eval_figures(results, cfg.eval.deterministic),
        "train_seconds": round(train_seconds, 2),
        "steps_per_second": round(env_steps / train_seconds, 1) if train_seconds > 0 else None,
    }
    write_json_atomic(out / "summary.json", summary)
    batch = f"{cfg.env.num_envs} x {cfg.ppo.rollout_steps}"
    keys = ["charts/episodic_return", "value/explained_variance", "policy/approx_kl", "policy/entropy"]
    plot_metrics(
        out / "metrics.jsonl",
        keys,
        out / "learning_curve.png",
        title=f"PPO on {cfg.env.id} (one step = one update of {batch} env steps)",
    )
    return summary


def ppo_update(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    minibatch_size: int,
) -> dict[str, float]:
    """K epochs of minibatch steps on L^CLIP - c1 L^VF + c2 H; returns the means of the losses and stats."""
    observations = rollout.observations.flatten(0, 1)  # (N*T, obs_dim)
    actions = rollout.actions.flatten(0, 1)  # (N*T,) or (N*T, action_dim)
    old_logprobs, old_values = rollout.logprobs.flatten(), rollout.values.flatten()
    advantages, returns = advantages.flatten(), returns.flatten()
    sums: dict[str, float] = {}
    steps, epochs_run = 0, 0
    for _ in range(cfg.epochs):
        epoch_kl = []
        for idx in torch.randperm(len(observations)).split(minibatch_size):
            logprobs, entropy, values = policy.evaluate(observations[idx], actions[idx])
            mb_advantages = whiten(advantages[idx]) if cfg.normalize_advantages else advantages[idx]
            policy_loss, policy_stats = clipped_policy_loss(
                logprobs, old_logprobs[idx], mb_advantages, None, cfg.clip_range
            )
            value_loss, value_stats = clipped_value_loss(
                values, old_values[idx], returns[idx], None, cfg.value_clip_range
            )
            entropy = entropy.mean()
            loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for key, value in (
                ("policy/loss", policy_loss),
                ("value/loss", value_loss),
                ("policy/entropy", entropy),
                ("policy/clipfrac", policy_stats["clipfrac"]),
                ("policy/approx_kl", policy_stats["approx_kl"]),
                ("value/clipfrac", value_stats["clipfrac"]),
            ):
                sums[key] = sums.get(key, 0.0) + value.item()
            epoch_kl.append(policy_stats["approx_kl"].item())
            steps += 1
        epochs_run += 1
        if cfg.target_kl is not None and np.mean(epoch_kl) > cfg.target_kl:
            break
    return {**{key: total / steps for key, total in sums.items()}, "ppo/epochs": epochs_run}


def _learning_rate(cfg: PPOConfig, update: int, num_updates: int) -> float:
    """lr * (1 - (update - 1) / num_updates) when annealing: the first update at full rate, the last just above 0."""
    return cfg.learning_rate * (1.0 - (update - 1) / num_updates) if cfg.anneal_lr else cfg.learning_rate


def _metrics(
    update: int,
    cfg: GymConfig,
    rollout: Rollout,
    returns: torch.Tensor,
    episodes: list[Episode],
    stats: dict[str, float],
    optimizer: torch.optim.Optimizer,
    seconds: float,
) -> dict[str, Any]:
    return {
        "charts/episodic_return": float(np.mean([e.return_ for e in episodes])) if episodes else None,
        "charts/episodic_length": float(np.mean([e.length for e in episodes])) if episodes else None,
        "charts/episodes": len(episodes),
        "charts/env_steps": update * cfg.batch_size,
        **stats,
        "value/explained_variance": float(explained_variance(rollout.values, returns)),
        "optim/learning_rate": optimizer.param_groups[0]["lr"],
        "time/steps_per_second": cfg.batch_size / seconds,
    }


def _build_policy(cfg: GymConfig, spec: EnvSpec) -> ActorCritic:
    return ActorCritic(
        spec.obs_dim,
        spec.action_dim,
        spec.discrete,
        cfg.policy.hidden_sizes,
        cfg.policy.orthogonal_init,
        cfg.policy.log_std_init,
    )


def _restore(
    out: Path, policy: ActorCritic, optimizer: torch.optim.Optimizer, runner: EnvRunner, seed: int
) -> tuple[int, float]:
    path = latest_checkpoint(out)
    if path is None:
        raise UserError(f"--resume: {out / 'checkpoints'} holds no checkpoint to continue from")
    tensors, state = load_checkpoint(path)
    policy.load_state_dict(tensors["policy"])
    optimizer.load_state_dict(state["optimizer"])
    runner.load_state_dict(state["runner"], reset_seed=seed + state["update"] * runner.num_envs)
    set_rng_state(state["rng"])
    return state["update"], state["train_seconds"]


def _save_final(out: Path, policy: ActorCritic, obs_normalizer: ObservationNormalizer | None) -> None:
    """final/policy.safetensors (+ obs_normalizer.safetensors): what `--eval` loads, written atomically."""

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(tmp / "policy.safetensors"))
        if obs_normalizer is not None:
            save_file(obs_normalizer.stats.state_dict(), str(tmp / "obs_normalizer.safetensors"))

    write_directory_atomic(out / "final", write)


def _eval_figures(results: list[Episode], deterministic: bool) -> dict[str, Any]:
    returns = np.array([e.return_ for e in results])
    return {
        "eval_return_mean": float(returns.mean()),
        "eval_return_std": float(returns.std()),
        "eval_length_mean": float(np.mean([e.length for e in results])),
        "eval_episodes": len(results),
        "eval_deterministic": deterministic,
    }


# ---------------------------------------------------------------------------
# Evaluating a finished run
# ---------------------------------------------------------------------------


def evaluate_run(run_dir: Path, cfg: GymConfig, out: Path) -> dict[str, Any]:
    """Evaluate `run_dir`/final for cfg.eval.episodes episodes; writes out/eval.json (and out/eval.gif)."""
    torch.set_num_threads(1)
    spec = inspect_env(cfg.env.id)
    if cfg.eval.video:
        check_video(cfg.env.id)
    policy = _build_policy(cfg, spec)
    policy.load_state_dict(load_file(str(run_dir / "final" / "policy.safetensors")))
    obs_normalizer = None
    if cfg.env.normalize_observation:
        obs_normalizer = ObservationNormalizer(spec.obs_dim)
        obs_normalizer.stats.load_state_dict(load_file(str(run_dir / "final" / "obs_normalizer.safetensors")))
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate(
        policy,
        spec,
        obs_normalizer,
        cfg.eval.episodes,
        cfg.seed + EVAL_SEED_OFFSET,
        cfg.eval.deterministic,
        out / "eval.gif" if cfg.eval.video else None,
    )
    figures = {"env_id": cfg.env.id, **_eval_figures(results, cfg.eval.deterministic)}
    write_json_atomic(out / "eval.json", figures)
    return figures


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


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
    parser.epilog = (
        (parser.epilog or "")
        + f"\n\nfor Box action spaces these defaults apply instead (a config file and --set still override them):\n  {defaults}"
    )


def run(args: argparse.Namespace) -> int:
    overrides = ([f"env.id={args.env}"] if args.env else []) + list(args.set)
    if args.eval:
        if args.resume or args.env:
            raise UserError(
                "--eval evaluates a finished run as it was trained; it cannot be combined with --resume or --env"
            )
        run_dir = Path(args.eval)
        cfg = load_config(GymConfig, args.config, overrides, base=_saved_config(run_dir, "--eval"))
        if not (run_dir / "final" / "policy.safetensors").is_file():
            raise UserError(
                f"--eval: {run_dir / 'final'} holds no policy; the run has not finished (continue it with --resume --out {run_dir})"
            )
        figures = evaluate_run(run_dir, cfg, Path(args.out) if args.out else run_dir / "eval")
        print(json.dumps(figures))
        return 0

    if args.out:
        overrides.append(f"out={args.out}")
    cfg = resolve_config(args.config, overrides, resume=args.resume)
    out = (
        Path(cfg.out)
        if cfg.out
        else Path("runs") / f"gym-{cfg.env.id.replace('/', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    if not args.resume and (out / "checkpoints").exists():
        raise UserError(f"{out} already holds a run; continue it with --resume, or choose another --out")
    if cfg.eval.video:
        check_video(cfg.env.id)
    out.mkdir(parents=True, exist_ok=True)
    summary = train(cfg, out, resume=args.resume)
    print(json.dumps(summary))
    print(f"run written to {out}")
    return 0


def resolve_config(config_file: str | None, overrides: list[str], resume: bool = False) -> GymConfig:
    """The run's configuration: defaults < (Box action space: CONTINUOUS_DEFAULTS; resuming: the run's config.yaml) < config file < `key=value` overrides."""
    if resume:
        out = next((o.partition("=")[2] for o in overrides if o.startswith("out=")), "")
        if not out:
            raise UserError("--resume needs the run to continue: --out DIR")
        return load_config(GymConfig, config_file, overrides, base=_saved_config(Path(out), "--resume"))
    cfg = load_config(GymConfig, config_file, overrides)
    if inspect_env(cfg.env.id).discrete:
        return cfg
    return load_config(GymConfig, config_file, overrides, base=CONTINUOUS_DEFAULTS)


def _saved_config(run_dir: Path, option: str) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{option}: {path} does not exist; give the output directory of an rlhfkit gym run")
    return yaml.safe_load(path.read_text())
