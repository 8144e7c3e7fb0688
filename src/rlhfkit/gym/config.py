"""`rlhfkit gym` configuration: one dataclass per concern, nested into `GymConfig`.

The keys are the language-model PPO's where the meaning is the same (`train.ppo_epochs`,
`train.mini_batch_size`, `ppo.lam`, `ppo.clip_range`, `optim.*`, ...); the old Gym names are
refused with the new one (`RENAMED_KEYS`).

The dataclass defaults are the settings for Discrete action spaces: the PPO paper's Atari
settings as CleanRL's ppo.py applies them to classic control (4 envs x 128 steps, 4 epochs of
minibatches of 128 rows, lr 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2, entropy bonus
0.01). For Box action spaces `CONTINUOUS_DEFAULTS` goes on top: the paper's MuJoCo settings
(1 env x 2048 steps, 10 epochs of minibatches of 64 rows, lr 3e-4, no entropy bonus) with
observation normalisation and reward scaling. A config file and --set override both, and
config.yaml records the values used.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.config import field, load_config
from rlhfkit.errors import UserError
from rlhfkit.gym.envs import inspect_env
from rlhfkit.training import OptimConfig


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
    clip_range: float = field(0.2, "epsilon of the clipped surrogate")
    value_clip_range: float = field(
        0.0, "clip the value change around the rollout-time values, in return units (0: unclipped)"
    )
    gamma: float = field(0.99, "discount")
    lam: float = field(0.95, "GAE lambda")
    entropy_coef: float = field(0.01, "weight of the entropy bonus")
    value_coef: float = field(0.5, "weight of the value loss (which is 0.5 * MSE)")
    normalize_advantages: bool = field(True, "whiten advantages within each minibatch")
    target_kl: float = field(
        0.0, "stop an update right after the first minibatch whose approx-KL exceeds this (0: never)"
    )

    def __post_init__(self) -> None:
        if self.rollout_steps < 1:
            raise UserError(f"ppo.rollout_steps must be >= 1, got {self.rollout_steps}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.clip_range <= 0:
            raise UserError(f"ppo.clip_range must be > 0, got {self.clip_range}")
        for name in ("value_clip_range", "target_kl"):
            if getattr(self, name) < 0:
                raise UserError(f"ppo.{name} must be >= 0 (0: off), got {getattr(self, name)}")


@dataclasses.dataclass
class TrainConfig:
    total_timesteps: int = field(100_000, "environment steps to train for (rounded up to whole batches)")
    ppo_epochs: int = field(4, "passes over each batch (K)")
    mini_batch_size: int = field(
        128, "environment steps (rows) per minibatch; must divide the batch env.num_envs * ppo.rollout_steps"
    )
    checkpoint_every: int = field(10, "updates between checkpoints (the last update always checkpoints)")

    def __post_init__(self) -> None:
        for name in ("total_timesteps", "ppo_epochs", "mini_batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be >= 1, got {getattr(self, name)}")


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
    train: TrainConfig = field(factory=TrainConfig, doc="budget, epochs, minibatches and checkpoints")
    optim: OptimConfig = field(
        factory=lambda: OptimConfig(learning_rate=2.5e-4, schedule="linear", max_grad_norm=0.5),
        doc="optimiser (Adam with eps 1e-5 at weight_decay 0; the schedule runs over the updates)",
    )
    eval: EvalConfig = field(factory=EvalConfig, doc="final evaluation")
    seed: int = field(0, "one seed for everything (sub-environment i is reset with seed + i)")
    out: str = field("", "output directory (default runs/gym-<env>-<timestamp>)")

    def __post_init__(self) -> None:
        if self.batch_size % self.train.mini_batch_size:
            raise UserError(
                f"train.mini_batch_size {self.train.mini_batch_size} does not divide the batch "
                f"env.num_envs * ppo.rollout_steps = {self.env.num_envs} * {self.ppo.rollout_steps} = "
                f"{self.batch_size}; pick a divisor"
            )

    @property
    def batch_size(self) -> int:
        """Environment steps per update (rows of the PPO batch)."""
        return self.env.num_envs * self.ppo.rollout_steps

    @property
    def num_updates(self) -> int:
        return math.ceil(self.train.total_timesteps / self.batch_size)


# The PPO paper's MuJoCo settings (its Table 3) with baselines' normalisation: the
# defaults for Box action spaces, under whatever a config file or --set says.
CONTINUOUS_DEFAULTS: dict[str, Any] = {
    "env": {"num_envs": 1, "normalize_observation": True, "normalize_reward": True},
    "ppo": {"rollout_steps": 2048, "entropy_coef": 0.0},
    "train": {"ppo_epochs": 10, "mini_batch_size": 64},
    "optim": {"learning_rate": 3e-4},
}

# Keys renamed to the language-model PPO's vocabulary: old name -> (new name, what else changed).
RENAMED_KEYS: dict[str, tuple[str, str]] = {
    "ppo.epochs": ("train.ppo_epochs", ""),
    "ppo.num_minibatches": ("train.mini_batch_size", "rows per minibatch, not a count of minibatches"),
    "ppo.gae_lambda": ("ppo.lam", ""),
    "ppo.learning_rate": ("optim.learning_rate", ""),
    "ppo.max_grad_norm": ("optim.max_grad_norm", ""),
    "ppo.anneal_lr": ("optim.schedule", "linear to anneal, constant not to"),
}


def refuse_renamed_keys(config_file: str | None, overrides: list[str]) -> None:
    """UserError naming the new key for any renamed key in `overrides` (--set) or the YAML file `config_file`."""
    sources = [("--set", item.partition("=")[0].strip()) for item in overrides]
    if config_file:
        sources += [(f"config file {config_file}", key) for key in _file_keys(Path(config_file))]
    for source, key in sources:
        if key in RENAMED_KEYS:
            new, note = RENAMED_KEYS[key]
            raise UserError(f"{source}: config key {key!r} is now {new!r}" + (f" ({note})" if note else ""))


def _file_keys(path: Path) -> list[str]:
    """The dotted keys of a YAML file (none where it does not parse: `load_config` then says what is wrong)."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return []
    return _dotted_keys(tree) if isinstance(tree, dict) else []


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _dotted_keys(value, f"{prefix}{key}.")
    return keys


def new_run_config(config_file: str | None, overrides: list[str]) -> GymConfig:
    """A new run's configuration: defaults < CONTINUOUS_DEFAULTS (Box action spaces) < config file < overrides."""
    # The environment decides the layering. Read its id where the one check across sections cannot
    # fail (a minibatch of 1 row divides any batch), so that a minibatch dividing only the Box batch
    # is judged under the Box defaults.
    probe = load_config(GymConfig, config_file, [*overrides, "train.mini_batch_size=1"])
    base = None if inspect_env(probe.env.id).discrete else CONTINUOUS_DEFAULTS
    return load_config(GymConfig, config_file, overrides, base=base)
