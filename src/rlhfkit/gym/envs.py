"""Making Gymnasium environments, and refusing the ones the recipe cannot drive, before any heavy work.

Observations of any space that flattens to a vector (Box, Discrete as one-hot,
Tuple and Dict of those) are flattened by `FlattenObservation`; the action
space must be Discrete (a categorical policy) or Box (a diagonal Gaussian).
Environments are stepped by a `SyncVectorEnv` in same-step autoreset mode: a
step that ends an episode returns the first observation of the next one, and
the observation the episode ended in comes back in `infos["final_obs"]`, which
is what a truncated episode must be bootstrapped from.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rlhfkit.errors import UserError


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What the policy needs to know about an environment: sizes and the action space."""

    env_id: str
    obs_dim: int
    action_space: spaces.Discrete | spaces.Box

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, spaces.Discrete)

    @property
    def action_dim(self) -> int:
        """Number of actions (Discrete) or of action coordinates (Box)."""
        if isinstance(self.action_space, spaces.Discrete):
            return int(self.action_space.n)
        return int(np.prod(self.action_space.shape))


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One environment with flattened observations (a module-level function, so vector envs pickle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            env = gym.make(env_id) if render_mode is None else gym.make(env_id, render_mode=render_mode)
        except gym.error.Error as error:
            raise UserError(f"env.id {env_id!r}: {error}") from None
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            # an id like "pkg.module:Name" makes Gymnasium import an entry point; a wrong one fails here
            raise UserError(
                f"env.id {env_id!r} is not a registered environment ({type(error).__name__}: {error})"
            ) from None
    space = env.observation_space
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return env
    if not space.is_np_flattenable:
        env.close()
        raise UserError(
            f"env.id {env_id!r} has observation space {space}, which does not flatten to a vector; "
            "rlhfkit gym supports Box, Discrete, and Tuple/Dict of those"
        )
    return gym.wrappers.FlattenObservation(env)


def inspect_env(env_id: str) -> EnvSpec:
    """Make one environment and check that the recipe supports its spaces; UserError naming the space if not."""
    env = make_env(env_id)
    env.close()
    action_space = env.action_space
    supported = isinstance(action_space, spaces.Discrete) or (
        isinstance(action_space, spaces.Box) and np.issubdtype(action_space.dtype, np.floating)
    )
    if not supported:
        raise UserError(
            f"env.id {env_id!r} has action space {action_space}; rlhfkit gym supports Discrete (categorical policy) "
            "and float Box (Gaussian policy) action spaces only"
        )
    return EnvSpec(
        env_id=env_id,
        obs_dim=int(np.prod(env.observation_space.shape or ())),
        action_space=action_space,  # type: ignore[arg-type]
    )


def make_vector_env(env_id: str, num_envs: int, render_mode: str | None = None) -> SyncVectorEnv:
    """`num_envs` copies stepped in lockstep, reset within the step that ends an episode (final_obs in infos)."""
    return SyncVectorEnv(
        [functools.partial(make_env, env_id, render_mode) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


def to_env_actions(actions: np.ndarray, action_space: spaces.Discrete | spaces.Box) -> np.ndarray:
    """Policy outputs (N,) indices or (N, action_dim) reals -> what the vector env takes.

    Discrete: index + space.start. Box: clipped to the bounds (a no-op for
    infinite ones) and reshaped to the space's shape; the Gaussian sample itself,
    unclipped, is what the rollout stores, so its log-probability stays exact.
    """
    if isinstance(action_space, spaces.Discrete):
        return actions.astype(np.int64) + int(action_space.start)
    clipped = np.minimum(np.maximum(actions, action_space.low.reshape(-1)), action_space.high.reshape(-1))
    return clipped.reshape(len(actions), *action_space.shape).astype(action_space.dtype)
