"""The configuration of `rlhfkit ppo`: one dataclass per concern, nested into `PPOConfig`.

Sizes that follow from others are properties of `PPOConfig` (`mini_batch_size`, `micro_batch_size`,
`optimizer_steps`), so a config.yaml keeps the user's 0 ("derived") and a resumed run derives the same.
"""

from __future__ import annotations

import dataclasses

from rlhfkit.algorithms import KL_ESTIMATORS
from rlhfkit.assets import PROMPTS
from rlhfkit.config import GenerationConfig, ModelConfig, RewardConfig, field
from rlhfkit.errors import UserError
from rlhfkit.training import OptimConfig


def derived_mini_batch_size(batch_size: int) -> int:
    """The largest divisor of `batch_size` not above max(1, batch_size // 4): four or more optimiser steps per epoch.

    16 -> 4, 12 -> 3, 6 -> 1 (the cap is 1), 2 -> 1.
    """
    cap = max(1, batch_size // 4)
    return next(size for size in range(cap, 0, -1) if batch_size % size == 0)


@dataclasses.dataclass
class PPODataConfig:
    prompts: str = field(str(PROMPTS), "prompts file (JSONL/JSON/CSV/Parquet) or datasets id")
    ptx: str = field(
        "", "demonstrations mixed into the update with coefficient ppo.ptx_coef (PPO-ptx, InstructGPT); empty: off"
    )
    max_prompt_length: int = field(256, "prompts longer than this many tokens are cut from the left")


@dataclasses.dataclass
class PPOTrainConfig:
    steps: int = field(20, "PPO iterations")
    batch_size: int = field(16, "prompts per iteration (all processes together)")
    ppo_epochs: int = field(4, "passes over each batch")
    mini_batch_size: int = field(
        0, "responses per optimiser step (0: the largest divisor of batch_size not above batch_size / 4)"
    )
    micro_batch_size: int = field(
        0, "responses per forward pass; gradients accumulate up to mini_batch_size (0: = mini_batch_size)"
    )
    checkpoint_every: int = field(10, "save a checkpoint every N iterations (0: only at the end)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ppo_epochs"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("mini_batch_size", "micro_batch_size", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.mini_batch_size and self.batch_size % self.mini_batch_size:
            raise UserError(
                f"train.batch_size {self.batch_size} is not divisible by train.mini_batch_size {self.mini_batch_size}"
            )


@dataclasses.dataclass
class PPOAlgorithmConfig:
    objective: str = field("clip", "clip (clipped surrogate) or kl_penalty (the PPO paper's adaptive-KL surrogate)")
    clip_range: float = field(0.2, "ε of the clipped surrogate")
    value_clip_range: float = field(0.2, "clip of the value update around the rollout-time values (0: unclipped)")
    value_coef: float = field(0.1, "weight of the value loss")
    entropy_coef: float = field(0.0, "weight of the entropy bonus")
    gamma: float = field(1.0, "discount over response tokens")
    lam: float = field(0.95, "GAE λ")
    target_kl: float = field(
        0.0, "stop this iteration's epochs once a minibatch's approx-KL(old‖new) exceeds it (0: never)"
    )
    penalty_beta: float = field(1.0, "initial β of the kl_penalty objective")
    penalty_target: float = field(0.01, "d_targ of the kl_penalty objective's β update")
    ptx_coef: float = field(0.0, "γ of PPO-ptx: weight of the SFT loss on data.ptx")

    def __post_init__(self) -> None:
        if self.objective not in ("clip", "kl_penalty"):
            raise UserError(f"ppo.objective must be clip or kl_penalty, got {self.objective!r}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise UserError(f"ppo.gamma must be in (0, 1] and ppo.lam in [0, 1], got {self.gamma} and {self.lam}")


@dataclasses.dataclass
class KLConfig:
    coef: float = field(0.05, "β of the per-token -β·KL reward (initial value if adaptive)")
    estimator: str = field("k1", "per-token KL estimator in the reward: k1 (log-ratio), k2 or k3")
    adaptive: bool = field(False, "adapt β to keep the KL near kl.target (Ziegler et al. 2019)")
    target: float = field(6.0, "target per-response KL for the adaptive controller")
    horizon: int = field(10000, "horizon (in responses) of the adaptive controller")

    def __post_init__(self) -> None:
        if self.estimator not in KL_ESTIMATORS:
            raise UserError(f"kl.estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.estimator!r}")


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
        if self.kind not in ("shared", "separate"):
            raise UserError(f"critic.kind must be shared or separate, got {self.kind!r}")


@dataclasses.dataclass
class PPOConfig:
    model: ModelConfig = field(factory=ModelConfig, doc="policy (and reference) model")
    data: PPODataConfig = field(factory=PPODataConfig, doc="data")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling")
    reward: RewardConfig = field(factory=RewardConfig, doc="reward source")
    score: ScoreConfig = field(factory=ScoreConfig, doc="score shaping")
    kl: KLConfig = field(factory=KLConfig, doc="KL penalty in the reward")
    ppo: PPOAlgorithmConfig = field(factory=PPOAlgorithmConfig, doc="PPO update")
    critic: CriticConfig = field(factory=CriticConfig, doc="critic")
    train: PPOTrainConfig = field(factory=PPOTrainConfig, doc="schedule")
    optim: OptimConfig = field(
        factory=OptimConfig, doc="optimiser (the schedule runs over all optimiser steps of the run)"
    )
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/ppo-<time>)")

    def __post_init__(self) -> None:
        if self.ppo.ptx_coef > 0 and not self.data.ptx:
            raise UserError("ppo.ptx_coef > 0 needs data.ptx=<demonstrations file>")
        if self.train.micro_batch_size and self.mini_batch_size % self.train.micro_batch_size:
            raise UserError(
                f"train.mini_batch_size {self.mini_batch_size} is not divisible by train.micro_batch_size "
                f"{self.train.micro_batch_size}"
            )

    @property
    def mini_batch_size(self) -> int:
        """Responses per optimiser step: train.mini_batch_size, or derived from train.batch_size when 0."""
        return self.train.mini_batch_size or derived_mini_batch_size(self.train.batch_size)

    @property
    def micro_batch_size(self) -> int:
        """Responses per forward pass of one process (at most its share of a minibatch)."""
        return self.train.micro_batch_size or self.mini_batch_size

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps over the whole run (for the learning-rate schedule)."""
        return self.train.steps * self.train.ppo_epochs * (self.train.batch_size // self.mini_batch_size)
