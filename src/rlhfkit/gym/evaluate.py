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

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

from rlhfkit.errors import UserError
from rlhfkit.gym.envs import EnvSpec, make_env, to_env_actions
from rlhfkit.gym.normalization import ObservationNormalizer
from rlhfkit.gym.policy import ActorCritic
from rlhfkit.gym.rollout import Episode


def check_video(env_id: str) -> None:
    """UserError unless `env_id` renders RGB frames here (checked by rendering one)."""
    env = make_env(env_id, render_mode="rgb_array")
    try:
        modes = env.metadata.get("render_modes", [])
        if "rgb_array" not in modes:
            raise UserError(
                f"eval.video: env.id {env_id!r} does not render rgb_array frames (its render modes: {modes}); set eval.video=false"
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
                action, _, _ = policy.act(torch.from_numpy(obs), deterministic=deterministic)
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
