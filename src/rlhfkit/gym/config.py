"""`rlhfkit gym` configuration: one dataclass per concern, nested into `GymConfig`.

The dataclass defaults are the settings for Discrete action spaces: the PPO
paper's Atari settings as CleanRL's ppo.py applies them to classic control (4 envs x 128 steps, 4 epochs of 4 minibatches, lr 2.5e-4 annealed,
gamma 0.99, lambda 0.95, clip 0.2, entropy bonus 0.01). For Box action spaces
`CONTINUOUS_DEFAULTS` goes on top: the paper's MuJoCo settings (1 env x 2048
steps, 10 epochs of 32 minibatches, lr 3e-4, no entropy bonus) with
observation normalisation and reward scaling. A config file and --set
override both, and config.yaml records the values used.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rlhfkit.config import field
from rlhfkit.errors import UserError


@dataclasses.dataclass
class EnvConfig:
    id: str = field("CartPole-v1", "Gymnasium environment id with a Discrete or Box action space (also --env ID)")
    num_envs: int = field(4, "environments stepped in lockstep (N)")
    normalize_observation: bool = field(
        False, "standardise observations by running mean/std (clipped to +-10); saved with the policy"
    )
    normalize_reward: bool = field(False, "divide rewards by a running std of the discounted return (clipped to +-10)")

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise UserError(f"env.num_envs must be >= 1, got {self.num_envs}")


@dataclasses.dataclass
class PolicyConfig:
    hidden_sizes: list[int] = field(
        factory=lambda: [64, 64], doc="tanh hidden layers of the policy MLP and of the value MLP"
    )
    orthogonal_init: bool = field(
        True, "orthogonal weights (gain sqrt 2; 0.01 policy output; 1 value output), zero biases"
    )
    log_std_init: float = field(0.0, "initial log standard deviation of the Gaussian policy (Box actions)")

    def __post_init__(self) -> None:
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise UserError(f"policy.hidden_sizes must be a non-empty list of positive sizes, got {self.hidden_sizes}")


@dataclasses.dataclass
class PPOConfig:
    rollout_steps: int = field(128, "steps per environment per rollout (T); a batch is num_envs * T steps")
    epochs: int = field(4, "passes over each batch (K)")
    num_minibatches: int = field(4, "minibatches per epoch; must divide the batch")
    clip_range: float = field(0.2, "epsilon of the clipped surrogate")
    value_clip_range: float | None = field(
        None, "clip the value change around the rollout-time values (null: unclipped)"
    )
    gamma: float = field(0.99, "discount")
    gae_lambda: float = field(0.95, "GAE lambda")
    entropy_coef: float = field(0.01, "weight of the entropy bonus")
    value_coef: float = field(0.5, "weight of the value loss (which is 0.5 * MSE)")
    max_grad_norm: float = field(0.5, "clip the global gradient norm to this")
    learning_rate: float = field(2.5e-4, "Adam learning rate at the start")
    anneal_lr: bool = field(True, "decay the learning rate linearly to 0 over the run")
    normalize_advantages: bool = field(True, "whiten advantages within each minibatch")
    target_kl: float | None = field(
        None, "stop an update's epochs early once their mean approx-KL exceeds this (null: never)"
    )

    def __post_init__(self) -> None:
        for name in ("rollout_steps", "epochs", "num_minibatches"):
            if getattr(self, name) < 1:
                raise UserError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("clip_range", "learning_rate", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise UserError(f"ppo.{name} must be > 0, got {getattr(self, name)}")
        for name in ("value_clip_range", "target_kl"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UserError(f"ppo.{name} must be > 0 or null, got {getattr(self, name)}")


@dataclasses.dataclass
class TrainConfig:
    total_timesteps: int = field(100_000, "environment steps to train for (rounded up to whole batches)")
    checkpoint_every: int = field(10, "updates between checkpoints (the last update always checkpoints)")

    def __post_init__(self) -> None:
        if self.total_timesteps < 1:
            raise UserError(f"train.total_timesteps must be >= 1, got {self.total_timesteps}")
        if self.checkpoint_every < 1:
            raise UserError(f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}")


@dataclasses.dataclass
class EvalConfig:
    episodes: int = field(10, "evaluation episodes of the final policy (and of --eval)")
    deterministic: bool = field(True, "act by the policy's mode (argmax or Gaussian mean) instead of sampling")
    video: bool = field(False, "record the first evaluation episode as eval.gif (the env must render rgb_array)")

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise UserError(f"eval.episodes must be >= 1, got {self.episodes}")


@dataclasses.dataclass
class GymConfig:
    env: EnvConfig = field(factory=EnvConfig, doc="environment")
    policy: PolicyConfig = field(factory=PolicyConfig, doc="actor-critic network")
    ppo: PPOConfig = field(factory=PPOConfig, doc="PPO")
    train: TrainConfig = field(factory=TrainConfig, doc="budget and checkpoints")
    eval: EvalConfig = field(factory=EvalConfig, doc="final evaluation")
    seed: int = field(0, "one seed for everything (sub-environment i is reset with seed + i)")
    out: str = field("", "output directory (default runs/gym-<env>-<timestamp>)")

    def __post_init__(self) -> None:
        if self.batch_size % self.ppo.num_minibatches:
            raise UserError(
                f"ppo.num_minibatches {self.ppo.num_minibatches} does not divide the batch env.num_envs * ppo.rollout_steps "
                f"= {self.env.num_envs} * {self.ppo.rollout_steps} = {self.batch_size}; pick a divisor"
            )

    @property
    def batch_size(self) -> int:
        return self.env.num_envs * self.ppo.rollout_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.ppo.num_minibatches

    @property
    def num_updates(self) -> int:
        return math.ceil(self.train.total_timesteps / self.batch_size)


# The PPO paper's MuJoCo settings (its Table 3) with baselines' normalisation: the
# defaults for Box action spaces, under whatever a config file or --set says.
CONTINUOUS_DEFAULTS: dict[str, Any] = {
    "env": {"num_envs": 1, "normalize_observation": True, "normalize_reward": True},
    "ppo": {"rollout_steps": 2048, "epochs": 10, "num_minibatches": 32, "learning_rate": 3e-4, "entropy_coef": 0.0},
}
