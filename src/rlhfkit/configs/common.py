"""Sections several commands share: the optimiser-step schedule, training data with a held-out split, the runtime,
and the bases of a command's config (`RunConfig`, and `PolicyRunConfig` for the commands that sample a policy).

Each command gives its own defaults by a factory (`ScheduleConfig(steps=200, ...)`) or by a subclass
that adds its keys; `--help` reads a default-built config, so it prints the values a command starts from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from rlhfkit.config import GenerationConfig, ModelConfig, field
from rlhfkit.errors import UserError


def require(section: str, config: Any, names: Iterable[str], rule: Callable[[Any], bool], requirement: str) -> None:
    """One-line UserError for the first `section.name` (`name` for a top-level key) whose value breaks `rule`."""
    for name in names:
        value = getattr(config, name)
        if not rule(value):
            raise UserError(f"{f'{section}.' if section else ''}{name} must be {requirement}, got {value}")


def require_positive(section: str, config: Any, names: Iterable[str]) -> None:
    """One-line UserError unless every `section.name` is > 0."""
    require(section, config, names, lambda value: value > 0, "positive")


def require_at_least(section: str, config: Any, names: Iterable[str], bound: float, note: str = "") -> None:
    """One-line UserError unless every `section.name` is >= `bound` (`note` says what the bound means)."""
    require(section, config, names, lambda value: value >= bound, f">= {bound}{note}")


def require_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """One-line UserError unless `value` of `key` is one of `choices`."""
    if value not in choices:
        raise UserError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


@dataclasses.dataclass
class ScheduleConfig:
    """`train.*` of SFT, reward models and DPO: optimiser steps over a global batch, with gradient accumulation."""

    steps: int = field(100, "optimiser steps")
    batch_size: int = field(
        8, "records per optimiser step (sft: examples, packed rows with data.packing; rm: pairs, rankings or "
        "choices; dpo: comparison pairs)"
    )  # fmt: skip
    micro_batch_size: int = field(
        0, "records per forward pass; gradients accumulate up to batch_size (0: = batch_size)"
    )
    eval_every: int = field(25, "evaluate every N steps (and at the end)")
    checkpoint_every: int = field(50, "save a checkpoint every N steps (and at the end)")

    def __post_init__(self) -> None:
        require_positive("train", self, ("steps", "batch_size", "eval_every", "checkpoint_every"))
        micro = self.micro_batch_size
        if micro < 0 or self.batch_size % (micro or self.batch_size):
            raise UserError(f"train.batch_size {self.batch_size} is not divisible by train.micro_batch_size {micro}")

    @property
    def micro_batch(self) -> int:
        """Records per forward pass: train.micro_batch_size, or the whole batch when 0."""
        return self.micro_batch_size or self.batch_size


@dataclasses.dataclass
class HeldOutConfig:
    """`data.*` of SFT, reward models and DPO: training records, a held-out split of them, a length cap."""

    train: str = field("", "training records; required")
    eval: str = field("", "held-out records (empty: hold out data.eval_fraction of data.train)")
    eval_fraction: float = field(0.1, "share of data.train held out when data.eval is empty")
    max_length: int = field(
        256, "tokens per prompt + response; the prompt is cut from the left first, the response never dropped"
    )

    def __post_init__(self) -> None:
        require("data", self, ("eval_fraction",), lambda value: 0 < value < 1, "in (0, 1)")
        require("data", self, ("max_length",), lambda value: value >= 2, "at least 2")


@dataclasses.dataclass
class RuntimeConfig:
    """`runtime.*` of every command: how this process computes (applied by `rlhfkit.runtime.run_config`)."""

    threads: int = field(0, "torch CPU threads of this run (0: leave the CLI's choice, `rlhfkit --threads`)")

    def __post_init__(self) -> None:
        require_at_least("runtime", self, ("threads",), 0, " (0: the CLI's choice)")


@dataclasses.dataclass
class RunConfig:
    """The keys every command has: how this process computes, the seed, the output directory (a base class)."""

    runtime: RuntimeConfig = field(factory=RuntimeConfig, doc="this process's computation")
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/<command>-<time>)")


@dataclasses.dataclass
class PolicyRunConfig(RunConfig):
    """The keys of every command that samples a policy (sft, dpo, ppo, grpo, rloo, generate, constitution): the
    language model and how it samples. Each command's docstring says what its model is and what it samples."""

    model: ModelConfig = field(factory=ModelConfig, doc="the policy (also the reference of the commands that have one)")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling")


@dataclasses.dataclass
class PPOLossConfig:
    """`ppo.*` that the language-model and the Gym PPO share (the same math, `rlhfkit.algorithms`): the clipped
    surrogate, the value loss, the entropy bonus, GAE and early stopping. Each adds its own keys and defaults."""

    clip_range: float = field(0.2, "ε of the clipped surrogate")
    value_clip_range: float = field(
        0.2, "clip of the value update around the rollout-time values, in return units (0: unclipped)"
    )
    value_coef: float = field(0.1, "weight of the value loss")
    entropy_coef: float = field(0.0, "weight of the entropy bonus")
    gamma: float = field(1.0, "discount (over response tokens for a language model)")
    lam: float = field(0.95, "GAE λ")
    target_kl: float = field(
        0.0, "stop this update's epochs right after a minibatch whose approx-KL(old‖new) exceeds it (0: never)"
    )

    def __post_init__(self) -> None:
        require("ppo", self, ("clip_range",), lambda value: value > 0, "> 0")
        require_at_least("ppo", self, ("value_clip_range", "target_kl"), 0, " (0: off)")
        require("ppo", self, ("gamma", "lam"), lambda value: 0 <= value <= 1, "in [0, 1]")
