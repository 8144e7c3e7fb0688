"""Evaluating a policy on fresh episodes, optionally recording the first one as an animated GIF.

Evaluation runs its own environment, seeded apart from training, with the
observation statistics frozen (the training run's) and the environment's own
rewards. By default actions are the policy's mode (argmax, or the Gaussian
mean), as Stable-Baselines3's `evaluate_policy` does. The GIF is written with
Pillow, which matplotlib already needs, so video costs no extra package beyond
what the environment needs to render (pygame for classic control).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

from rlhfkit.config import load_config, load_yaml_mapping
from rlhfkit.errors import UserError
from rlhfkit.gym.config import GymConfig
from rlhfkit.gym.envs import EnvSpec, inspect_env, make_env, to_env_actions
from rlhfkit.gym.normalization import ObservationNormalizer
from rlhfkit.gym.policy import ActorCritic, PolicySnapshot, load_policy
from rlhfkit.gym.rollout import Episode
from rlhfkit.runtime import Runtime
from rlhfkit.tracking import write_json_atomic

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes start from seed + this, apart from training's seed + i


def check_video(env_id: str) -> None:
    """UserError unless `env_id` renders RGB frames here (checked by rendering one)."""
    env = make_env(env_id, render_mode="rgb_array")
    try:
        modes = env.metadata.get("render_modes", [])
        if "rgb_array" not in modes:
            raise UserError(
                f"eval.video: env.id {env_id!r} does not render rgb_array frames (its render modes: {modes}); "
                "set eval.video=false"
            )
        env.reset(seed=0)
        try:
            frame = env.render()
        except gym.error.DependencyNotInstalled as error:
            raise UserError(f"eval.video: env.id {env_id!r} cannot render here: {error}") from None
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3):
            raise UserError(
                f"eval.video: env.id {env_id!r} rendered {type(frame).__name__}, not an RGB array; set eval.video=false"
            )
    finally:
        env.close()


@torch.no_grad()
def evaluate(
    policy: ActorCritic,
    spec: EnvSpec,
    obs_normalizer: ObservationNormalizer | None,
    episodes: int,
    seed: int,
    deterministic: bool,
    video_path: Path | None = None,
) -> list[Episode]:
    """Run `episodes` episodes (the first reset seeded with `seed`) -> their returns and lengths."""
    env = make_env(spec.env_id, render_mode="rgb_array" if video_path is not None else None)
    acting = PolicySnapshot(policy)
    results = []
    try:
        for episode in range(episodes):
            raw, _ = env.reset(seed=seed if episode == 0 else None)
            frames: list[np.ndarray] | None = [] if video_path is not None and episode == 0 else None
            total, length, done = 0.0, 0, False
            while not done:
                if frames is not None:
                    frames.append(np.asarray(env.render()))
                obs = np.asarray(raw, np.float32).reshape(1, -1)
                if obs_normalizer is not None:
                    obs = obs_normalizer(obs, update=False)
                action, _, _ = acting.act(torch.from_numpy(obs), deterministic=deterministic)
                raw, reward, terminated, truncated, _ = env.step(to_env_actions(action.numpy(), spec.action_space)[0])
                total += float(reward)
                length += 1
                done = terminated or truncated
            if frames is not None and video_path is not None:
                frames.append(np.asarray(env.render()))
                write_gif(frames, video_path, fps=env.metadata.get("render_fps") or 30)
            results.append(Episode(total, length))
    finally:
        env.close()
    return results


def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """(H, W, 3) uint8 frames -> a looping GIF at `fps` frames per second."""

    images = [Image.fromarray(frame) for frame in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def evaluation_figures(
    policy: ActorCritic,
    spec: EnvSpec,
    obs_normalizer: ObservationNormalizer | None,
    config: GymConfig,
    runtime: Runtime,
    video_path: Path | None,
) -> dict[str, Any]:
    """A run's final evaluation: eval.episodes episodes from seed + 1e6, any sampling on its own seed.

    So `rlhfkit gym --eval DIR` repeats the training summary's episodes exactly, sampled or not,
    and evaluating never shifts the random streams of the run around it.
    """
    seed = config.seed + EVAL_SEED_OFFSET
    with runtime.forked_rng(seed):
        results = evaluate(
            policy, spec, obs_normalizer, config.eval.episodes, seed, config.eval.deterministic, video_path
        )
    returns = np.array([e.return_ for e in results])
    return {
        "eval_return_mean": float(returns.mean()),
        "eval_return_std": float(returns.std()),
        "eval_length_mean": float(np.mean([e.length for e in results])),
        "eval_episodes": len(results),
        "eval_deterministic": config.eval.deterministic,
    }


def evaluate_run(run_dir: Path, config_file: str | None, overrides: list[str], out: Path) -> dict[str, Any]:
    """Evaluate `run_dir`/final under the run's config.yaml (+ `config_file`, `overrides`) as its summary did.

    Writes out/eval.json (and out/eval.gif) and returns the figures.
    """
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise UserError(f"--eval: {saved} does not exist; give the output directory of an rlhfkit gym run")
    config = load_config(GymConfig, config_file, overrides, base=load_yaml_mapping(saved))
    if not (run_dir / "final" / "policy.safetensors").is_file():
        raise UserError(
            f"--eval: {run_dir / 'final'} holds no policy; the run has not finished "
            f"(continue it with --resume --out {run_dir})"
        )
    torch.set_num_threads(1)
    spec = inspect_env(config.env.id)
    if config.eval.video:
        check_video(config.env.id)
    policy, obs_normalizer = load_policy(run_dir / "final", config, spec)
    out.mkdir(parents=True, exist_ok=True)
    video_path = out / "eval.gif" if config.eval.video else None
    figures = evaluation_figures(policy, spec, obs_normalizer, config, Runtime(seed=config.seed), video_path)
    figures = {"env_id": config.env.id, **figures}
    write_json_atomic(out / "eval.json", figures)
    return figures
