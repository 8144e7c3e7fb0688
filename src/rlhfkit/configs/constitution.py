"""The configuration of `rlhfkit constitution`: the prompts, the constitution and its rounds, the sampling."""

from __future__ import annotations

import dataclasses

from rlhfkit.assets import PROMPTS
from rlhfkit.config import field
from rlhfkit.configs.common import PolicyRunConfig, require_positive


def _default_prompts() -> str:
    return str(PROMPTS)


@dataclasses.dataclass
class ConstitutionDataConfig:
    prompts: str = field(factory=_default_prompts, doc="prompt records to critique and revise responses for")
    limit: int = field(0, "use only the first N prompts (0: all)")


@dataclasses.dataclass
class CritiqueConfig:
    constitution: str = field(
        "", "constitution YAML of principles (empty: the shipped src/rlhfkit/assets/constitution.yaml)"
    )
    revisions: int = field(1, "critique-revision rounds per prompt")
    batch_size: int = field(16, "prompts per batched generation")

    def __post_init__(self) -> None:
        require_positive("critique", self, ("revisions", "batch_size"))


@dataclasses.dataclass
class ConstitutionConfig(PolicyRunConfig):
    """`model` answers, critiques and revises; `generation` samples the responses, critiques and revisions."""

    data: ConstitutionDataConfig = field(factory=ConstitutionDataConfig, doc="prompts")
    critique: CritiqueConfig = field(factory=CritiqueConfig, doc="the constitution and the rounds")
    seed: int = field(0, "seed for sampling and for the choice of principles")
