"""The configuration of `rlhfkit ppo` (and `grpo`, `rloo`): one dataclass per concern, nested into `PPOConfig`.

Sizes that follow from others are properties of `PPOConfig` (`group_size`, `mini_batch_size`,
`micro_batch_size`, `optimizer_steps`), so a config.yaml keeps the user's 0 ("derived") and a resumed
run derives the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rlhfkit.algorithms import KL_ESTIMATORS, LOSS_AGGREGATIONS
from rlhfkit.assets import ARITHMETIC, EVAL_PROMPTS, PROMPTS
from rlhfkit.config import REWARD_KINDS, RewardConfig, field
from rlhfkit.configs.common import (
    PolicyRunConfig,
    PPOLossConfig,
    require,
    require_at_least,
    require_choice,
    require_positive,
)
from rlhfkit.errors import UserError
from rlhfkit.rollout.advantages import ADVANTAGE_ESTIMATORS, GROUP_ESTIMATORS, AdvantageSpec
from rlhfkit.training import OptimConfig

DEFAULT_GROUP_SIZE = 4  # K of the group estimators when algorithm.group_size is 0 (GRPO's papers use 4 to 64)


def derived_mini_batch_size(batch_size: int) -> int:
    """The largest divisor of `batch_size` not above max(1, batch_size // 4): four or more optimiser steps per epoch.

    16 -> 4, 12 -> 3, 6 -> 1 (the cap is 1), 2 -> 1.
    """
    cap = max(1, batch_size // 4)
    return next(size for size in range(cap, 0, -1) if batch_size % size == 0)


@dataclasses.dataclass
class PPODataConfig:
    prompts: str = field(
        "",
        "prompts file (JSONL/JSON/CSV/Parquet) or datasets id (empty: the packaged prompts, arithmetic.jsonl "
        "with references for reward.kind=verifiable, else prompts.jsonl; config.yaml records which)",
    )
    ptx: str = field(
        "", "demonstrations mixed into the update with coefficient ppo.ptx_coef (PPO-ptx, InstructGPT); empty: off"
    )
    max_prompt_length: int = field(256, "prompts longer than this many tokens are cut from the left")


@dataclasses.dataclass
class PPOBatchConfig:
    """`train.*` of one PPO iteration: its prompts, epochs and minibatches. `rlhfkit loop` has these keys alone
    (its rounds set the iterations and checkpoints); `rlhfkit ppo` adds them in `PPOTrainConfig`."""

    batch_size: int = field(
        16, "prompts per iteration (all processes together); each gets algorithm.group_size responses"
    )
    ppo_epochs: int = field(4, "passes over each batch")
    mini_batch_size: int = field(
        0, "responses per optimiser step (0: the largest divisor of the responses per iteration not above a quarter)"
    )
    micro_batch_size: int = field(
        0, "responses per forward pass; gradients accumulate up to mini_batch_size (0: = mini_batch_size)"
    )

    def __post_init__(self) -> None:
        require_positive("train", self, ("batch_size", "ppo_epochs"))
        require_at_least("train", self, ("mini_batch_size", "micro_batch_size"), 0)


@dataclasses.dataclass
class PPOTrainConfig(PPOBatchConfig):
    steps: int = field(20, "PPO iterations")
    checkpoint_every: int = field(10, "save a checkpoint every N iterations (0: only at the end)")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("train", self, ("steps",))
        require_at_least("train", self, ("checkpoint_every",), 0)


@dataclasses.dataclass
class PPOAlgorithmConfig(PPOLossConfig):
    objective: str = field("clip", "clip (clipped surrogate) or kl_penalty (the PPO paper's adaptive-KL surrogate)")
    penalty_beta: float = field(1.0, "initial β of the kl_penalty objective")
    penalty_target: float = field(0.01, "d_targ of the kl_penalty objective's β update")
    ptx_coef: float = field(0.0, "γ of PPO-ptx: weight of the SFT loss on data.ptx")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("ppo.objective", self.objective, ("clip", "kl_penalty"))
        require("ppo", self, ("gamma",), lambda value: value > 0, "in (0, 1]")


@dataclasses.dataclass
class AlgorithmConfig:
    advantage: str = field(
        "gae",
        "advantage estimator: gae (PPO with a critic), or without a value model grpo, rloo, reinforce++, "
        "reinforce++-baseline",
    )
    group_size: int = field(
        0,
        f"responses sampled per prompt, K (0: {DEFAULT_GROUP_SIZE} for the group estimators grpo, rloo, "
        "reinforce++-baseline, else 1)",
    )
    scale_by_std: bool = field(True, "grpo divides by the group's std (false: Dr. GRPO, the mean only)")
    loss_aggregation: str = field(
        "token_mean",
        "per-token losses to one: token_mean (every token alike), sequence_mean_token_mean (GRPO's paper), "
        "constant_normalizer (Dr. GRPO: token sum / (responses x max_new_tokens))",
    )
    kl_in: str = field("reward", "where the KL to the reference acts: reward (-β·KL per token) or loss (+β·KL term)")
    kl_estimator: str = field(
        "", "per-token KL estimator: k1, k2 or k3 (Schulman); empty: k1 in the reward, k3 in the loss"
    )

    def __post_init__(self) -> None:
        require_choice("algorithm.advantage", self.advantage, ADVANTAGE_ESTIMATORS)
        if self.group_size < 0:
            raise UserError(f"algorithm.group_size must be >= 1 (0: derived), got {self.group_size}")
        if self.advantage in GROUP_ESTIMATORS and self.group_size == 1:
            raise UserError(
                f"algorithm.group_size 1 leaves algorithm.advantage={self.advantage} no group to compare a response "
                f"with; set algorithm.group_size to 2 or more (0: {DEFAULT_GROUP_SIZE})"
            )
        require_choice("algorithm.loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        require_choice("algorithm.kl_in", self.kl_in, ("reward", "loss"))
        if self.kl_estimator:
            require_choice("algorithm.kl_estimator", self.kl_estimator, KL_ESTIMATORS)

    @property
    def critic_free(self) -> bool:
        """No value model: the advantage comes from the scores alone."""
        return self.advantage != "gae"

    @property
    def responses_per_prompt(self) -> int:
        """K: algorithm.group_size, or derived when 0."""
        return self.group_size or (DEFAULT_GROUP_SIZE if self.advantage in GROUP_ESTIMATORS else 1)

    @property
    def kl_estimator_name(self) -> str:
        """algorithm.kl_estimator, or derived when empty: k1 in the reward (Ziegler), k3 in the loss (GRPO)."""
        return self.kl_estimator or ("k1" if self.kl_in == "reward" else "k3")


@dataclasses.dataclass
class KLConfig:
    coef: float = field(
        0.05, "β: the weight of the KL to the reference, in the reward or the loss (initial value if adaptive)"
    )
    adaptive: bool = field(False, "adapt β to keep the KL near kl.target (Ziegler et al. 2019)")
    target: float = field(6.0, "target per-response KL for the adaptive controller")
    horizon: int = field(10000, "horizon (in responses) of the adaptive controller")


@dataclasses.dataclass
class ScoreConfig:
    normalize: bool = field(False, "normalise scores by their running mean and std")
    clip: float = field(0.0, "clip (normalised) scores to ±clip (0: off)")
    no_eos_penalty: float = field(0.0, "subtracted from the score of a response that did not end with EOS")


@dataclasses.dataclass
class CriticConfig:
    kind: str = field("shared", "shared (a value head on the policy) or separate (its own transformer)")
    model: str = field(
        "",
        "for a separate critic: the model to start from "
        "(default: the reward model if reward.kind=model, else model.name)",
    )

    def __post_init__(self) -> None:
        require_choice("critic.kind", self.kind, ("shared", "separate"))


MONITOR_ACTIONS = ("stop", "rollback")


@dataclasses.dataclass
class MonitorConfig:
    enabled: bool = field(
        False, "watch for reward hacking on held-out prompts and stop the run when it starts (rewards/hacking.py)"
    )
    gold: str = field(
        "",
        "an independent judge of the held-out samples, a reward.kind (sentiment, rouge, length, function, model, "
        "verifiable); empty: no gold judge, and the rules that need one are off",
    )
    gold_function: str = field("", "package.module:function of the gold judge, for monitor.gold=function")
    gold_model: str = field("", "reward-model directory of the gold judge, for monitor.gold=model")
    prompts: str = field(str(EVAL_PROMPTS), "held-out prompts, never trained on (default: the packaged ones)")
    num_prompts: int = field(16, "held-out prompts answered at each evaluation")
    eval_every: int = field(2, "evaluate every N iterations (and before the first and after the last)")
    patience: int = field(
        2, "stop when the proxy reward rose and the gold score fell at this many evaluations in a row (Gao et al.)"
    )
    gold_tolerance: float = field(0.1, "stop when the gold score falls this far below its first value")
    distinct_2_fraction: float = field(
        0.0, "stop when distinct-2 of the responses falls below this fraction of its first value (0: off)"
    )
    action: str = field(
        "stop", "on a stop: stop (final/ is the current policy) or rollback (final/ is the best gold evaluation's)"
    )

    def __post_init__(self) -> None:
        require_choice("monitor.action", self.action, MONITOR_ACTIONS)
        if self.gold and self.gold not in REWARD_KINDS:
            raise UserError(f"monitor.gold must be empty or one of {', '.join(REWARD_KINDS)}, got {self.gold!r}")
        if self.action == "rollback" and not self.gold:
            raise UserError("monitor.action=rollback goes back to the best gold score: set monitor.gold=<judge>")
        if self.num_prompts <= 0 or self.patience <= 0 or self.eval_every < 0:
            raise UserError("monitor.num_prompts and monitor.patience must be positive, monitor.eval_every >= 0")
        if self.gold_tolerance < 0 or not 0 <= self.distinct_2_fraction < 1:
            raise UserError("monitor.gold_tolerance must be >= 0 and monitor.distinct_2_fraction in [0, 1)")
        if self.gold == "function" and ":" not in self.gold_function:
            raise UserError(f"monitor.gold_function must look like package.module:function, got {self.gold_function!r}")
        if self.gold == "model" and not self.gold_model:
            raise UserError("monitor.gold=model needs monitor.gold_model=<directory of an rlhfkit rm run>/final")

    @property
    def gold_reward(self) -> RewardConfig | None:
        """The gold judge as a reward source's configuration; None without one."""
        if not self.gold:
            return None
        return RewardConfig(kind=self.gold, function=self.gold_function, model=self.gold_model)


@dataclasses.dataclass
class PPOConfig(PolicyRunConfig):
    """`model` is the policy and its reference; `generation` samples the responses that are scored."""

    data: PPODataConfig = field(factory=PPODataConfig, doc="data")
    reward: RewardConfig = field(factory=RewardConfig, doc="reward source")
    score: ScoreConfig = field(factory=ScoreConfig, doc="score shaping")
    kl: KLConfig = field(factory=KLConfig, doc="KL to the reference")
    algorithm: AlgorithmConfig = field(factory=AlgorithmConfig, doc="advantage estimator, loss reduction, KL")
    ppo: PPOAlgorithmConfig = field(factory=PPOAlgorithmConfig, doc="PPO update")
    critic: CriticConfig = field(factory=CriticConfig, doc="critic")
    monitor: MonitorConfig = field(factory=MonitorConfig, doc="reward-hacking monitor")
    train: PPOTrainConfig = field(factory=PPOTrainConfig, doc="schedule")
    optim: OptimConfig = field(
        factory=OptimConfig, doc="optimiser (the schedule runs over all optimiser steps of the run)"
    )

    def __post_init__(self) -> None:
        if not self.data.prompts:
            self.data.prompts = str(ARITHMETIC if self.reward.kind == "verifiable" else PROMPTS)
        if self.ppo.ptx_coef > 0 and not self.data.ptx:
            raise UserError("ppo.ptx_coef > 0 needs data.ptx=<demonstrations file>")
        if self.algorithm.critic_free and self.critic.kind != "shared":
            raise UserError(
                f"critic.kind={self.critic.kind} asks for a value model, which algorithm.advantage="
                f"{self.algorithm.advantage} does without; use algorithm.advantage=gae for a critic"
            )
        if self.train.mini_batch_size and self.responses_per_iteration % self.train.mini_batch_size:
            raise UserError(
                f"{self._responses_named} is not divisible by train.mini_batch_size {self.train.mini_batch_size}"
            )
        if self.train.micro_batch_size and self.mini_batch_size % self.train.micro_batch_size:
            raise UserError(
                f"train.mini_batch_size {self.mini_batch_size} is not divisible by train.micro_batch_size "
                f"{self.train.micro_batch_size}"
            )

    def check_processes(self, num_processes: int) -> None:
        """Every process must hold whole groups of responses and an equal share of every minibatch."""
        if self.train.batch_size % num_processes or self.mini_batch_size % num_processes:
            raise UserError(
                f"train.batch_size {self.train.batch_size} (prompts) and train.mini_batch_size {self.mini_batch_size} "
                f"(responses) must be divisible by the {num_processes} processes"
            )

    @property
    def critic_source(self) -> str | None:
        """None for a value head on the policy (or no critic); for a separate critic the model it starts from."""
        if self.critic.kind == "shared":
            return None
        reward_model = self.reward.model if self.reward.kind == "model" else ""
        return self.critic.model or reward_model or self.model.name

    @property
    def _responses_named(self) -> str:
        batch, group = self.train.batch_size, self.algorithm.responses_per_prompt
        if group == 1:
            return f"train.batch_size {batch}"
        return f"train.batch_size {batch} x algorithm.group_size {group} = {batch * group} responses"

    @property
    def responses_per_iteration(self) -> int:
        """Responses sampled per iteration: train.batch_size prompts x K (algorithm.group_size) each."""
        return self.train.batch_size * self.algorithm.responses_per_prompt

    @property
    def mini_batch_size(self) -> int:
        """Responses per optimiser step: train.mini_batch_size, or derived from the responses per iteration when 0."""
        return self.train.mini_batch_size or derived_mini_batch_size(self.responses_per_iteration)

    @property
    def micro_batch_size(self) -> int:
        """Responses per forward pass of one process (at most its share of a minibatch)."""
        return self.train.micro_batch_size or self.mini_batch_size

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps over the whole run (for the learning-rate schedule)."""
        return self.train.steps * self.train.ppo_epochs * (self.responses_per_iteration // self.mini_batch_size)

    def advantage_spec(self, kl_coef: float) -> AdvantageSpec:
        """What step 4 needs, with the KL controller's current β (in the reward only when algorithm.kl_in=reward)."""
        algorithm = self.algorithm
        return AdvantageSpec(
            estimator=algorithm.advantage,
            kl_coef=kl_coef if algorithm.kl_in == "reward" else 0.0,
            kl_estimator=KL_ESTIMATORS[algorithm.kl_estimator_name],
            gamma=self.ppo.gamma,
            lam=self.ppo.lam,
            group_size=algorithm.responses_per_prompt,
            scale_by_std=algorithm.scale_by_std,
        )


# `rlhfkit grpo` and `rlhfkit rloo`: the keys whose defaults each changes (a base under --config and --set)
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "grpo": {
        "algorithm": {"advantage": "grpo", "group_size": 4, "kl_in": "loss", "kl_estimator": "k3"},
        "train": {"batch_size": 4},
    },
    "rloo": {
        "algorithm": {"advantage": "rloo", "group_size": 4, "kl_in": "reward"},
        "train": {"batch_size": 4},
    },
}
