"""`rlhfkit gym` configuration: one dataclass per concern, nested into `GymConfig`.

The keys are the language-model PPO's where the meaning is the same (`train.ppo_epochs`,
`train.mini_batch_size`, `ppo.lam`, `ppo.clip_range`, `optim.*`, ...); the old Gym names are
refused with the new one (`RENAMED_KEYS`). The `ppo` section also holds the rollout and
advantage keys that REINFORCE, A2C and TRPO share with PPO (`ppo.rollout_steps`, `ppo.gamma`,
...): its name is the language-model vocabulary's. A key that the chosen `algorithm` does not
read is refused (`READ_BY`): a knob that does nothing would be a lie.

The dataclass defaults are PPO's for Discrete action spaces: the PPO paper's Atari settings as
CleanRL's ppo.py applies them to classic control (4 envs x 128 steps, 4 epochs of minibatches of
128 rows, lr 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2, entropy bonus 0.01). Each other
algorithm, and each algorithm on a Box action space, starts from `algorithm_defaults` on top of
them (PPO on Box: the paper's MuJoCo settings with observation normalisation and reward
scaling). A config file and --set override both, and config.yaml records the values used.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rlhfkit.config import NAMED, field, load_config, refuse_old_keys, user_entries
from rlhfkit.configs.common import PPOLossConfig, RuntimeConfig, require, require_at_least
from rlhfkit.errors import UserError
from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.preferences import RewardConfig, refuse_unsupported_preference_settings
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
        require_at_least("env", self, ("num_envs",), 1)


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
class PPOConfig(PPOLossConfig):
    """The language-model PPO's `ppo.*` (`PPOLossConfig`), with the rollout's length and per-minibatch whitening."""

    rollout_steps: int = field(128, "steps per environment per rollout (T); a batch is num_envs * T steps")
    normalize_advantages: bool = field(True, "whiten advantages within each minibatch")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("ppo", self, ("rollout_steps",), 1)


# Where Gym's PPO starts apart from the language model's: the PPO paper's Atari settings (value loss 0.5 * MSE)
GYM_PPO_DEFAULTS = {"value_clip_range": 0.0, "value_coef": 0.5, "entropy_coef": 0.01, "gamma": 0.99}


@dataclasses.dataclass
class ReinforceConfig:
    baseline: bool = field(
        True, "subtract V(s_t) from the Monte-Carlo return, V fitted to the returns (false: the plain return)"
    )


@dataclasses.dataclass
class TRPOConfig:
    max_kl: float = field(0.01, "trust region delta: the largest mean KL(pi_old || pi_new) an update may reach")
    cg_iterations: int = field(10, "conjugate-gradient iterations solving F s = g for the natural gradient")
    cg_damping: float = field(0.1, "lambda in (F + lambda I) s = g: keeps the sampled Fisher matrix invertible")
    line_search_steps: int = field(10, "backtracking tries: fractions 1, 1/2, ..., 1/2^(n-1) of the full step")
    value_epochs: int = field(
        10, "Adam passes over the batch fitting V to the returns, in minibatches of train.mini_batch_size rows"
    )

    def __post_init__(self) -> None:
        require("trpo", self, ("max_kl", "cg_damping"), lambda value: value > 0, "> 0")
        require_at_least("trpo", self, ("cg_iterations", "line_search_steps", "value_epochs"), 1)


@dataclasses.dataclass
class TrainConfig:
    total_timesteps: int = field(100_000, "environment steps to train for (rounded up to whole batches)")
    ppo_epochs: int = field(4, "passes over each batch (K)")
    mini_batch_size: int = field(
        128, "environment steps (rows) per minibatch; must divide the batch env.num_envs * ppo.rollout_steps"
    )
    checkpoint_every: int = field(10, "updates between checkpoints (the last update always checkpoints)")

    def __post_init__(self) -> None:
        require_at_least("train", self, ("total_timesteps", "ppo_epochs", "mini_batch_size", "checkpoint_every"), 1)


@dataclasses.dataclass
class EvalConfig:
    episodes: int = field(10, "evaluation episodes of the final policy (and of --eval)")
    deterministic: bool = field(True, "act by the policy's mode (argmax or Gaussian mean) instead of sampling")
    video: bool = field(False, "record the first evaluation episode as eval.gif (the env must render rgb_array)")

    def __post_init__(self) -> None:
        require_at_least("eval", self, ("episodes",), 1)


# The road to PPO, in order: `rlhfkit.gym.updates.UPDATES` holds one update function for each.
ALGORITHMS = ("reinforce", "a2c", "trpo", "ppo")
MINIBATCH_ALGORITHMS = ("trpo", "ppo")  # those that read train.mini_batch_size


@dataclasses.dataclass
class GymConfig:
    algorithm: str = field("ppo", f"the update: {', '.join(ALGORITHMS)} (each reads its own keys; see docs/gym.md)")
    env: EnvConfig = field(factory=EnvConfig, doc="environment")
    policy: PolicyConfig = field(factory=PolicyConfig, doc="actor-critic network")
    ppo: PPOConfig = field(
        factory=lambda: PPOConfig(**GYM_PPO_DEFAULTS), doc="the rollout and advantages (all algorithms), PPO's clipping"
    )
    reinforce: ReinforceConfig = field(factory=ReinforceConfig, doc="REINFORCE (algorithm=reinforce)")
    trpo: TRPOConfig = field(factory=TRPOConfig, doc="TRPO (algorithm=trpo)")
    train: TrainConfig = field(factory=TrainConfig, doc="budget, epochs, minibatches and checkpoints")
    optim: OptimConfig = field(
        factory=lambda: OptimConfig(learning_rate=2.5e-4, schedule="linear", max_grad_norm=0.5),
        doc="optimiser (Adam with eps 1e-5 at weight_decay 0; the schedule runs over the updates)",
    )
    eval: EvalConfig = field(factory=EvalConfig, doc="final evaluation")
    reward: RewardConfig = field(factory=RewardConfig, doc="the environment's reward, or one learned from preferences")
    runtime: RuntimeConfig = field(
        factory=RuntimeConfig, doc="this process's computation (the MLPs run on 1 CPU thread unless threads > 0)"
    )
    seed: int = field(0, "one seed for everything (sub-environment i is reset with seed + i)")
    out: str = field("", "output directory (default runs/gym-<env>-<timestamp>)")

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if self.algorithm in MINIBATCH_ALGORITHMS and self.batch_size % self.train.mini_batch_size:
            raise UserError(
                f"train.mini_batch_size {self.train.mini_batch_size} does not divide the batch "
                f"env.num_envs * ppo.rollout_steps = {self.env.num_envs} * {self.ppo.rollout_steps} = "
                f"{self.batch_size}; pick a divisor"
            )
        normalized = [name for name in ("normalize_observation", "normalize_reward") if getattr(self.env, name)]
        refuse_unsupported_preference_settings(self.reward, normalized, self.ppo.rollout_steps)

    @property
    def batch_size(self) -> int:
        """Environment steps per update (rows of the PPO batch)."""
        return self.env.num_envs * self.ppo.rollout_steps

    @property
    def num_updates(self) -> int:
        return math.ceil(self.train.total_timesteps / self.batch_size)


# The PPO paper's MuJoCo settings (its Table 3) with baselines' normalisation: PPO's
# defaults for Box action spaces, under whatever a config file or --set says.
CONTINUOUS_DEFAULTS: dict[str, Any] = {
    "env": {"num_envs": 1, "normalize_observation": True, "normalize_reward": True},
    "ppo": {"rollout_steps": 2048, "entropy_coef": 0.0},
    "train": {"ppo_epochs": 10, "mini_batch_size": 64},
    "optim": {"learning_rate": 3e-4},
}
NORMALIZED = {"normalize_observation": True, "normalize_reward": True}
RAW_REWARD: dict[str, Any] = {"normalize_observation": False, "normalize_reward": False}  # reward.kind=preferences
A2C_PPO_KEYS = {"rollout_steps": 5, "lam": 1.0, "entropy_coef": 0.0, "value_coef": 1.0, "normalize_advantages": False}

# Where each algorithm starts, on top of the dataclass defaults: (Discrete, Box) action spaces.
ALGORITHM_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Monte-Carlo returns need whole episodes, so long rollouts (8 x 256 steps), and a larger step to
    # make up for one Adam step per rollout (CartPole above 200 within 60k steps at lr 5e-3, seed 0).
    "reinforce": (
        {
            "env": {"num_envs": 8},
            "ppo": {"rollout_steps": 256, "entropy_coef": 0.0},
            "optim": {"learning_rate": 5e-3, "schedule": "constant"},
        },
        {
            "env": {"num_envs": 8, **NORMALIZED},
            "ppo": {"rollout_steps": 256, "entropy_coef": 0.0},
            "optim": {"learning_rate": 1e-3, "schedule": "constant"},
        },
    ),
    # Stable-Baselines3's A2C: 5 steps x 8 envs (rl-baselines3-zoo's classic control), n-step returns
    # (lambda 1), unwhitened advantages, its vf_coef 0.5 on the MSE (1.0 on 0.5 * MSE here), lr 7e-4,
    # no entropy bonus; Adam in place of its RMSprop.
    "a2c": (
        {
            "env": {"num_envs": 8},
            "ppo": A2C_PPO_KEYS,
            "optim": {"learning_rate": 7e-4, "schedule": "constant"},
        },
        {
            "env": {"num_envs": 8, **NORMALIZED},
            "ppo": A2C_PPO_KEYS,
            "optim": {"learning_rate": 7e-4, "schedule": "constant"},
        },
    ),
    # sb3-contrib's TRPO: the critic fitted by 10 Adam epochs of 128-row minibatches at lr 1e-3, unclipped;
    # its 1 x 2048 batch on Box, 4 x 256 on Discrete (CartPole at 500 within 20k steps, seeds 0-2).
    "trpo": (
        {
            "env": {"num_envs": 4},
            "ppo": {"rollout_steps": 256},
            "optim": {"learning_rate": 1e-3, "schedule": "constant", "max_grad_norm": 0.0},
        },
        {
            "env": {"num_envs": 1, **NORMALIZED},
            "ppo": {"rollout_steps": 2048},
            "optim": {"learning_rate": 1e-3, "schedule": "constant", "max_grad_norm": 0.0},
        },
    ),
    "ppo": ({}, CONTINUOUS_DEFAULTS),
}

# Keys that only some algorithms read (a key here, or a key under a section here). Naming one for
# another algorithm is refused: the run would silently ignore it.
READ_BY: dict[str, tuple[str, ...]] = {
    "reinforce": ("reinforce",),
    "trpo": ("trpo",),
    "ppo.lam": ("a2c", "trpo", "ppo"),  # REINFORCE's returns are Monte-Carlo: lambda is 1
    "ppo.entropy_coef": ("reinforce", "a2c", "ppo"),  # TRPO's step is the surrogate's alone
    "ppo.value_coef": ("reinforce", "a2c", "ppo"),  # TRPO fits the critic on its own
    "ppo.clip_range": ("ppo",),
    "ppo.value_clip_range": ("ppo",),
    "ppo.target_kl": ("ppo",),
    "train.ppo_epochs": ("ppo",),
    "train.mini_batch_size": MINIBATCH_ALGORITHMS,
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


def algorithms_reading(key: str) -> tuple[str, ...]:
    """The algorithms that read the dotted `key` (all of them for a key not in `READ_BY`)."""
    for prefix, algorithms in READ_BY.items():
        if key == prefix or key.startswith(prefix + "."):
            return algorithms
    return ALGORITHMS


def refuse_renamed_keys(config_file: str | None, overrides: list[str]) -> None:
    """UserError naming the new key for any old Gym name (`RENAMED_KEYS`) in --set or the YAML file."""
    refuse_old_keys(config_file, overrides, RENAMED_KEYS)


def refuse_keys_of_other_algorithms(config: GymConfig, config_file: str | None, overrides: list[str]) -> None:
    """UserError for a key named by --set, or set away from its default in a config file, that the algorithm ignores.

    A config file may hold such a key at its default value, as the config.yaml of every run does.
    """
    for source, key, value in user_entries(config_file, overrides):
        algorithms = algorithms_reading(key)
        if config.algorithm in algorithms or isinstance(value, dict):
            continue
        if value is NAMED or value != _default(key):
            raise UserError(
                f"{source}: config key {key!r} is read by algorithm={' or '.join(algorithms)} only, "
                f"not by algorithm={config.algorithm}; remove it or choose that algorithm"
            )


def refuse_preference_keys_without_preferences(
    config: GymConfig, config_file: str | None, overrides: list[str]
) -> None:
    """UserError for a reward.* key other than reward.kind, named or set away from its default, without preferences."""
    if config.reward.kind == "preferences":
        return
    for source, key, value in user_entries(config_file, overrides):
        if key.startswith("reward.") and key != "reward.kind" and (value is NAMED or value != _default(key)):
            raise UserError(
                f"{source}: config key {key!r} is read with reward.kind=preferences only; "
                "remove it or set reward.kind=preferences"
            )


def _default(key: str) -> Any:
    """The dataclass default of the dotted `key` (None for a key that does not exist)."""
    node: Any = GymConfig()
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def algorithm_defaults(algorithm: str, discrete: bool) -> dict[str, Any]:
    """What `algorithm` starts from on a Discrete or Box action space, under any config file and --set."""
    discrete_defaults, box_defaults = ALGORITHM_DEFAULTS[algorithm]
    return discrete_defaults if discrete else box_defaults


def describe_defaults() -> str:
    """`algorithm_defaults` as lines for --help: one per algorithm and action space."""
    lines = []
    for algorithm, per_space in ALGORITHM_DEFAULTS.items():
        for space, defaults in zip(("Discrete", "Box"), per_space):
            settings = [
                f"{section}.{key}={value}" for section, values in defaults.items() for key, value in values.items()
            ]
            lines.append(f"  {algorithm}, {space}: {' '.join(settings) or '(the defaults above)'}")
    return "\n".join(lines)


def new_run_config(config_file: str | None, overrides: list[str]) -> GymConfig:
    """A new run's configuration: defaults < `algorithm_defaults` < config file < overrides."""
    # The algorithm and the environment decide the layering. Read them where the one check across
    # sections cannot fail (a minibatch of 1 row divides any batch), so that a minibatch dividing
    # only the algorithm's own batch is judged under that algorithm's defaults.
    probe = load_config(GymConfig, config_file, [*overrides, "train.mini_batch_size=1", "reward.segment_steps=1"])
    base = algorithm_defaults(probe.algorithm, inspect_env(probe.env.id).discrete)
    if probe.reward.kind == "preferences":  # the reward model reads raw observations, standardises its own output
        base = {**base, "env": {**base.get("env", {}), **RAW_REWARD}}
    return load_config(GymConfig, config_file, overrides, base=base)
