"""The configuration of `rlhfkit sft`: demonstrations with a held-out split, the schedule, the optimiser."""

from __future__ import annotations

import dataclasses

from rlhfkit.assets import DEMONSTRATIONS, EVAL_PROMPTS
from rlhfkit.config import field
from rlhfkit.configs.common import HeldOutConfig, PolicyRunConfig, ScheduleConfig
from rlhfkit.training import OptimConfig


@dataclasses.dataclass
class SFTDataConfig(HeldOutConfig):
    train: str = field(
        str(DEMONSTRATIONS), "demonstrations: prompt + response, or messages ending with the assistant turn"
    )
    prompts: str = field(
        str(EVAL_PROMPTS), "prompts whose sampled answers are logged to samples.jsonl at each evaluation"
    )
    packing: bool = field(False, "concatenate examples into rows of max_length tokens")


@dataclasses.dataclass
class SFTTrainConfig(ScheduleConfig):
    eval_samples: int = field(4, "prompts from data.prompts answered at each evaluation (0: none)")


@dataclasses.dataclass
class SFTConfig(PolicyRunConfig):
    """`model` is the model to fine-tune; `generation` samples the answers logged at each evaluation."""

    data: SFTDataConfig = field(factory=SFTDataConfig, doc="data")
    train: SFTTrainConfig = field(factory=SFTTrainConfig, doc="schedule")
    optim: OptimConfig = field(factory=lambda: OptimConfig(learning_rate=2e-5), doc="optimiser")
