"""The configuration of `rlhfkit dpo`: comparisons with a held-out split, the loss and schedule, the gold scorer."""

from __future__ import annotations

import dataclasses

from rlhfkit.assets import EVAL_PROMPTS
from rlhfkit.config import RewardConfig, field
from rlhfkit.configs.common import (
    HeldOutConfig,
    PolicyRunConfig,
    ScheduleConfig,
    require,
    require_at_least,
    require_choice,
    require_positive,
)
from rlhfkit.training import OptimConfig

DPO_LOSSES = ("dpo", "ipo", "conservative")


@dataclasses.dataclass
class DPODataConfig(HeldOutConfig):
    train: str = field("", "comparisons: prompt + chosen + rejected (e.g. from `rlhfkit label`); required")
    prompts: str = field(str(EVAL_PROMPTS), "held-out prompts whose answers measure the policy's KL to the reference")


@dataclasses.dataclass
class DPOTrainConfig(ScheduleConfig):
    loss: str = field("dpo", "dpo, ipo or conservative (label-smoothed DPO)")
    beta: float = field(0.1, "β: strength of the pull to the reference (IPO's τ)")
    label_smoothing: float = field(0.1, "for loss=conservative: probability that a label is flipped, in [0, 0.5)")
    kl_prompts: int = field(16, "held-out prompts answered at each evaluation to measure KL (0: none)")
    score_answers: bool = field(False, "also score held-out answers with reward.* (a gold measure, never trained on)")
    reference_batch_size: int = field(16, "pairs per forward pass when caching the reference log-probs")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("train", self, ("reference_batch_size", "beta"))
        require_choice("train.loss", self.loss, DPO_LOSSES)
        require("train", self, ("label_smoothing",), lambda value: 0 <= value < 0.5, "in [0, 0.5)")
        require_at_least("train", self, ("kl_prompts",), 0)


@dataclasses.dataclass
class DPOConfig(PolicyRunConfig):
    """`model` is the policy, which is also the reference; `generation` samples the held-out answers."""

    data: DPODataConfig = field(factory=DPODataConfig, doc="data")
    train: DPOTrainConfig = field(factory=DPOTrainConfig, doc="loss and schedule")
    optim: OptimConfig = field(factory=lambda: OptimConfig(learning_rate=5e-6), doc="optimiser")
    reward: RewardConfig = field(factory=RewardConfig, doc="gold scorer of held-out answers, with train.score_answers")
