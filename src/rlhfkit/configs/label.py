"""The configuration of `rlhfkit label`: a reward source as the judge, or a judge model (`--judge ai`)."""

from __future__ import annotations

import dataclasses

from rlhfkit.config import ModelConfig, RewardConfig, check_precision, field
from rlhfkit.configs.common import RunConfig, require_at_least, require_choice
from rlhfkit.rewards.ai_judge import JudgeConfig

FORMATS = ("comparisons", "rankings", "choices")


@dataclasses.dataclass
class LabelDataConfig:
    train: str = field(
        "", 'candidates: prompt + "responses" (e.g. OUT/candidates.jsonl of `rlhfkit generate`); required'
    )


@dataclasses.dataclass
class NoiseConfig:
    temperature: float = field(
        0.0, "T of the Bradley-Terry label noise P(a ≻ b) = σ((s_a - s_b)/T); 0: the judge's exact order"
    )

    def __post_init__(self) -> None:
        require_at_least("noise", self, ("temperature",), 0)


@dataclasses.dataclass
class LabelConfig(RunConfig):
    data: LabelDataConfig = field(factory=LabelDataConfig, doc="data")
    reward: RewardConfig = field(factory=RewardConfig, doc="the judge (also --judge KIND)")
    format: str = field("comparisons", "records to write: comparisons (all pairs), rankings or choices (also --format)")
    noise: NoiseConfig = field(factory=NoiseConfig, doc="label noise")
    dtype: str = field("auto", "precision of a reward-model judge: auto, float32 or bfloat16 (as model.dtype)")
    seed: int = field(0, "seed of the label noise")

    def __post_init__(self) -> None:
        require_choice("format", self.format, FORMATS)
        self.dtype = check_precision(self.dtype, "dtype")


@dataclasses.dataclass
class AILabelConfig(RunConfig):
    """The keys of `rlhfkit label --judge ai`: a judge model instead of a reward source."""

    data: LabelDataConfig = field(factory=LabelDataConfig, doc="data")
    model: ModelConfig = field(
        factory=ModelConfig,
        doc="the policy: the judge unless judge.model names another (model.dtype is the judge's precision)",
    )
    judge: JudgeConfig = field(factory=JudgeConfig, doc="the AI judge")
    seed: int = field(0, "seed for the choice of principles")
