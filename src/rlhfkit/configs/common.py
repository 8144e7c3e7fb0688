"""Sections several commands share: the optimiser-step schedule, training data with a held-out split, the runtime.

Each command gives its own defaults by a factory (`ScheduleConfig(steps=200, ...)`) or by a subclass
that adds its keys; `--help` reads a default-built config, so it prints the values a command starts from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rlhfkit.config import field
from rlhfkit.errors import UserError


def require_positive(section: str, config: Any, names: tuple[str, ...]) -> None:
    """One-line UserError unless every `section.name` (`name` for top-level keys) is > 0."""
    for name in names:
        if getattr(config, name) <= 0:
            key = f"{section}.{name}" if section else name
            raise UserError(f"{key} must be positive, got {getattr(config, name)}")


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
        if not 0 < self.eval_fraction < 1:
            raise UserError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.max_length < 2:
            raise UserError(f"data.max_length must be at least 2, got {self.max_length}")


@dataclasses.dataclass
class RuntimeConfig:
    """`runtime.*` of every command: how this process computes (applied by `rlhfkit.runtime.run_config`)."""

    threads: int = field(0, "torch CPU threads of this run (0: leave the CLI's choice, `rlhfkit --threads`)")

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise UserError(f"runtime.threads must be >= 0 (0: the CLI's choice), got {self.threads}")
