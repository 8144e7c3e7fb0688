"""The configuration of `rlhfkit rm`: preference records with a held-out split, the schedule, normalisation."""

from __future__ import annotations

import dataclasses

from rlhfkit.config import GenerationConfig, ModelConfig, field
from rlhfkit.configs.common import HeldOutConfig, RunConfig, ScheduleConfig
from rlhfkit.errors import UserError
from rlhfkit.models.heads import check_pooling
from rlhfkit.training import OptimConfig


@dataclasses.dataclass
class RMDataConfig(HeldOutConfig):
    train: str = field("", "comparisons, rankings or choices (e.g. the output of `rlhfkit label`); required")


@dataclasses.dataclass
class NormalizeConfig:
    enabled: bool = field(True, "set gain and bias so the reference policy's responses score mean 0, std 1")
    policy: str = field("", "the reference policy that samples those responses (empty: model.name)")
    num_prompts: int = field(64, "training prompts answered by the reference policy (one response each)")
    batch_size: int = field(16, "prompts per sampling batch")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling of the reference responses")

    def __post_init__(self) -> None:
        if self.num_prompts < 2 or self.batch_size <= 0:
            raise UserError(
                "normalize.num_prompts must be >= 2 and normalize.batch_size > 0, "
                f"got {self.num_prompts}, {self.batch_size}"
            )


@dataclasses.dataclass
class RMConfig(RunConfig):
    model: ModelConfig = field(factory=ModelConfig, doc="the backbone: any causal LM, or an `rlhfkit sft` final/")
    data: RMDataConfig = field(factory=RMDataConfig, doc="data")
    train: ScheduleConfig = field(
        factory=lambda: ScheduleConfig(steps=200, eval_every=50, checkpoint_every=100), doc="schedule"
    )
    optim: OptimConfig = field(factory=lambda: OptimConfig(learning_rate=1e-5), doc="optimiser")
    pooling: str = field(
        "last",
        "where the head reads: last (the last token, EOS; InstructGPT) or mean (averaged over the response tokens)",
    )
    normalize: NormalizeConfig = field(factory=NormalizeConfig, doc="reward normalisation after training")

    def __post_init__(self) -> None:
        check_pooling(self.pooling)
