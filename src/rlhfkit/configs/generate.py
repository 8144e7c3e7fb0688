"""The configuration of `rlhfkit generate`: the model, the prompts, K responses per prompt."""

from __future__ import annotations

import dataclasses

from rlhfkit.assets import PROMPTS
from rlhfkit.config import field
from rlhfkit.configs.common import PolicyRunConfig, require_at_least, require_positive


@dataclasses.dataclass
class GenerateDataConfig:
    prompts: str = field(str(PROMPTS), "prompts file (JSONL/JSON/CSV/Parquet) or datasets id")
    limit: int = field(0, "use only the first N prompts (0: all)")

    def __post_init__(self) -> None:
        require_at_least("data", self, ("limit",), 0)


@dataclasses.dataclass
class GenerateConfig(PolicyRunConfig):
    """`model` is the model that answers; `generation` samples its K responses to each prompt."""

    data: GenerateDataConfig = field(factory=GenerateDataConfig, doc="data")
    num_responses: int = field(4, "K: responses sampled per prompt")
    batch_size: int = field(8, "prompts per sampling batch (each repeated K times)")

    def __post_init__(self) -> None:
        require_positive("", self, ("num_responses", "batch_size"))
