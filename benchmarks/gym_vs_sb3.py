"""`rlhfkit gym` against Stable-Baselines3's PPO: same environment, budget, hyperparameters and evaluation.

(With --set algorithm=a2c or trpo: SB3's A2C or sb3-contrib's TRPO, translated the same way; see
`SB3_ARGUMENTS`. benchmarks/gym_family.py uses `train_sb3` for all three.)

For each seed both libraries train once, in alternating order (rlhfkit first
on even seeds, SB3 first on odd ones), so that a noisy machine slows both
alike. Both run with one torch thread (--threads N: N). Both are evaluated by the same loop:
10 deterministic episodes (argmax or Gaussian mean), the first reset seeded
with seed + 1,000,000, observations normalised with the run's frozen
statistics, rewards unscaled.

Hyperparameters are rlhfkit's resolved config (defaults, the algorithm's and action space's
defaults, then --set), translated to SB3's arguments (PPO's here; `SB3_ARGUMENTS` for all):
  n_steps = ppo.rollout_steps, n_envs = env.num_envs,
  batch_size = train.mini_batch_size, n_epochs = train.ppo_epochs, gae_lambda = ppo.lam,
  learning_rate = optim.learning_rate * progress_remaining when optim.schedule is linear,
  max_grad_norm = optim.max_grad_norm, clip_range_vf = ppo.value_clip_range (0: None),
  vf_coef = ppo.value_coef / 2 (SB3's value loss is the MSE, rlhfkit's 0.5 * MSE),
  VecNormalize(norm_obs, norm_reward, clip 10, gamma) when either normaliser is on,
  net_arch pi = vf = policy.hidden_sizes, tanh, ortho_init, log_std_init.
Both bootstrap truncated episodes from V(final observation).
(ppo.target_kl is not translated: SB3 stops before the step of the first minibatch whose approx-KL
exceeds 1.5 x target, rlhfkit right after the step of the first one that exceeds the target.)

    .venv/bin/python benchmarks/gym_vs_sb3.py --env CartPole-v1 --timesteps 100000 --seeds 0 1 2
    .venv/bin/python benchmarks/gym_vs_sb3.py --env Pendulum-v1 --timesteps 200000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rlhfkit.errors import UserError
from rlhfkit.gym.config import GymConfig, new_run_config
from rlhfkit.gym.evaluate import EVAL_SEED_OFFSET
from rlhfkit.recipes.gym import GymTrainer


def _common_arguments(cfg: GymConfig) -> dict:
    """The SB3 arguments every on-policy algorithm shares, from rlhfkit's resolved config."""
    if cfg.optim.schedule not in ("linear", "constant") or cfg.optim.warmup_steps or cfg.optim.weight_decay:
        raise UserError("gym_vs_sb3: SB3's Adam is translated for a linear or constant schedule only")
    lr = cfg.optim.learning_rate
    return {
        "learning_rate": (lambda progress: lr * progress) if cfg.optim.schedule == "linear" else lr,
        "n_steps": cfg.ppo.rollout_steps,
        "gamma": cfg.ppo.gamma,
        "normalize_advantage": cfg.ppo.normalize_advantages,
        "policy_kwargs": {
            "net_arch": {"pi": list(cfg.policy.hidden_sizes), "vf": list(cfg.policy.hidden_sizes)},
            "activation_fn": torch.nn.Tanh,
            "ortho_init": cfg.policy.orthogonal_init,
            "log_std_init": cfg.policy.log_std_init,
        },
        "seed": cfg.seed,
        "device": "cpu",
    }


def _ppo_arguments(cfg: GymConfig) -> dict:
    if cfg.ppo.target_kl > 0:
        raise UserError("gym_vs_sb3: ppo.target_kl has different semantics in SB3; leave it 0")
    return {
        "batch_size": cfg.train.mini_batch_size,
        "n_epochs": cfg.train.ppo_epochs,
        "gae_lambda": cfg.ppo.lam,
        "clip_range": cfg.ppo.clip_range,
        "clip_range_vf": cfg.ppo.value_clip_range or None,
        "ent_coef": cfg.ppo.entropy_coef,
        "vf_coef": cfg.ppo.value_coef / 2,
        "max_grad_norm": cfg.optim.max_grad_norm,
    }


def _a2c_arguments(cfg: GymConfig) -> dict:
    # Adam (SB3's policies give it eps 1e-5, as rlhfkit does) in place of SB3's default RMSprop
    return {
        "gae_lambda": cfg.ppo.lam,
        "ent_coef": cfg.ppo.entropy_coef,
        "vf_coef": cfg.ppo.value_coef / 2,
        "max_grad_norm": cfg.optim.max_grad_norm,
        "use_rms_prop": False,
    }


def _trpo_arguments(cfg: GymConfig) -> dict:
    if cfg.optim.max_grad_norm > 0:
        raise UserError("gym_vs_sb3: sb3-contrib's TRPO does not clip the critic's gradient; set optim.max_grad_norm=0")
    trpo = cfg.trpo
    return {
        "batch_size": cfg.train.mini_batch_size,
        "gae_lambda": cfg.ppo.lam,
        "target_kl": trpo.max_kl,
        "cg_max_steps": trpo.cg_iterations,
        "cg_damping": trpo.cg_damping,
        "line_search_shrinking_factor": 0.5,  # rlhfkit halves the step
        "line_search_max_iter": trpo.line_search_steps,
        "n_critic_updates": trpo.value_epochs,
    }


SB3_ARGUMENTS = {"ppo": _ppo_arguments, "a2c": _a2c_arguments, "trpo": _trpo_arguments}


def sb3_class(algorithm: str) -> type:
    """SB3's PPO or A2C, or sb3-contrib's TRPO (UserError where that is not installed, or for REINFORCE)."""
    if algorithm not in SB3_ARGUMENTS:
        raise UserError(f"gym_vs_sb3: Stable-Baselines3 has no {algorithm}")
    if algorithm == "trpo":
        try:
            from sb3_contrib import TRPO
        except ImportError:
            raise UserError("sb3-contrib is not installed: pip install sb3-contrib") from None
        return TRPO
    from stable_baselines3 import A2C, PPO

    return {"ppo": PPO, "a2c": A2C}[algorithm]


def train_sb3(cfg: GymConfig) -> tuple[float, list[float], list[tuple[int, float]]]:
    """Train SB3's `cfg.algorithm` with `cfg`'s hyperparameters.

    Returns (train+eval wall seconds, evaluation returns, training episodes as (env steps when it
    ended, return)); the environments step in lockstep, so sub-env i's k-th episode ends at
    num_envs * (its steps so far).
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    started = time.perf_counter()
    venv = monitors = make_vec_env(cfg.env.id, n_envs=cfg.env.num_envs, seed=cfg.seed)
    normalizer = None
    if cfg.env.normalize_observation or cfg.env.normalize_reward:
        venv = normalizer = VecNormalize(
            venv,
            norm_obs=cfg.env.normalize_observation,
            norm_reward=cfg.env.normalize_reward,
            clip_obs=10.0,
            clip_reward=10.0,
            gamma=cfg.ppo.gamma,
            epsilon=1e-8,
        )
    arguments = _common_arguments(cfg) | SB3_ARGUMENTS[cfg.algorithm](cfg)
    model = sb3_class(cfg.algorithm)("MlpPolicy", venv, **arguments)
    model.learn(total_timesteps=cfg.num_updates * cfg.batch_size)
    episodes = [
        (cfg.env.num_envs * int(end), float(r))
        for monitor in monitors.envs
        for end, r in zip(np.cumsum(monitor.get_episode_lengths()), monitor.get_episode_rewards())
    ]
    returns = evaluate_sb3(model, normalizer, cfg)
    return time.perf_counter() - started, returns, sorted(episodes)


def evaluate_sb3(model, normalizer, cfg: GymConfig) -> list[float]:
    """The evaluation of rlhfkit gym: cfg.eval.episodes episodes, the first reset seeded seed + 1e6, raw rewards."""
    env = gym.make(cfg.env.id)
    returns = []
    for episode in range(cfg.eval.episodes):
        obs, _ = env.reset(seed=cfg.seed + EVAL_SEED_OFFSET if episode == 0 else None)
        total, done = 0.0, False
        while not done:
            policy_obs = normalizer.normalize_obs(obs) if normalizer is not None else obs
            action, _ = model.predict(policy_obs, deterministic=cfg.eval.deterministic)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def train_rlhfkit(cfg: GymConfig, out: Path) -> tuple[float, dict]:
    """A full `rlhfkit gym` run (checkpoints, TensorBoard, evaluation, plot) -> (wall seconds, its summary)."""
    started = time.perf_counter()
    summary = GymTrainer(cfg).train(out)
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="rlhfkit config override (translated for SB3 too)",
    )
    parser.add_argument("--out", default="runs/bench-gym-vs-sb3")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of both libraries (rlhfkit: runtime.threads)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.set.append(f"runtime.threads={args.threads}")

    rows = []
    for i, seed in enumerate(args.seeds):
        out = Path(args.out) / f"{args.env}-seed{seed}"
        cfg = new_run_config(
            None,
            [f"env.id={args.env}", f"train.total_timesteps={args.timesteps}", f"seed={seed}", f"out={out}", *args.set],
        )
        row: dict = {
            "env_id": args.env,
            "seed": seed,
            "env_steps": cfg.num_updates * cfg.batch_size,
            "order": "rlhfkit, sb3" if i % 2 == 0 else "sb3, rlhfkit",
        }
        for library in row["order"].split(", "):
            if library == "rlhfkit":
                wall, summary = train_rlhfkit(cfg, out)
                row.update(
                    rlhfkit_return=summary["eval_return_mean"],
                    rlhfkit_return_std=summary["eval_return_std"],
                    rlhfkit_seconds=round(wall, 1),
                )
            else:
                wall, returns, _ = train_sb3(cfg)
                row.update(
                    sb3_return=float(np.mean(returns)),
                    sb3_return_std=float(np.std(returns)),
                    sb3_seconds=round(wall, 1),
                )
        row["time_ratio"] = round(row["rlhfkit_seconds"] / row["sb3_seconds"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{args.env}, {rows[0]['env_steps']:,} steps, overrides {args.set or 'none'}")
    print("| seed | rlhfkit eval return | SB3 eval return | rlhfkit wall s | SB3 wall s | time ratio rlhfkit/SB3 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['seed']} | {r['rlhfkit_return']:.1f} ± {r['rlhfkit_return_std']:.1f} | "
            f"{r['sb3_return']:.1f} ± {r['sb3_return_std']:.1f} | {r['rlhfkit_seconds']:.0f} | "
            f"{r['sb3_seconds']:.0f} | {r['time_ratio']:.2f} |"
        )
    mean = {
        k: float(np.mean([r[k] for r in rows]))
        for k in ("rlhfkit_return", "sb3_return", "rlhfkit_seconds", "sb3_seconds")
    }
    print(
        f"| mean | {mean['rlhfkit_return']:.1f} | {mean['sb3_return']:.1f} | {mean['rlhfkit_seconds']:.0f} | "
        f"{mean['sb3_seconds']:.0f} | {mean['rlhfkit_seconds'] / mean['sb3_seconds']:.2f} |"
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.env}-results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
