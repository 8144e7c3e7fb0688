"""What SFT, reward-model, DPO, PPO and Gym training share: optimiser, schedule, data order, exact resume.

- `OptimConfig` + `build_optimizer`: AdamW over the trainable parameters and a
  warmup-then-constant/linear/cosine learning-rate schedule.
- `rlhfkit.training.logprobs` (not imported here): the log-likelihood of response tokens (the SFT
  loss, DPO's policy terms, PPO-ptx). It needs the model helpers, and so transformers, which this
  module, imported by Gym too, does not.
- `batch_indices`: which records optimiser step k uses, a pure function of
  (k, seed), so the data position of a resumed run is just its step.
- `training_state` / `load_training_state`: what a checkpoint holds of a trained
  model (all weights, or only the LoRA adapter and heads), its optimiser and
  scheduler; the run skeleton (`rlhfkit.runtime.run`) adds the step and RNG
  streams and writes it atomically, so a resumed run ends bitwise equal.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from rlhfkit.config import field
from rlhfkit.errors import UserError

SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass
class OptimConfig:
    learning_rate: float = field(1e-5, "peak AdamW learning rate (reached after warmup)")
    weight_decay: float = field(0.0, "AdamW decoupled weight decay")
    warmup_steps: int = field(0, "optimiser steps of linear warmup from 0 to the peak learning rate")
    schedule: str = field("constant", "learning rate after warmup: constant, linear (to 0) or cosine (to 0)")
    max_grad_norm: float = field(1.0, "clip the global gradient norm to this (0: no clipping)")
    betas: list[float] = field(factory=lambda: [0.9, 0.999], doc="AdamW (beta1, beta2)")
    keep_moments: bool = field(
        False,
        "keep AdamW's moments in the last checkpoint once the run completes, so that extending it (--resume with "
        "more steps) is exact; false drops them (2/3 of a full fine-tuning checkpoint) and an extension restarts them",
    )

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise UserError(f"optim.learning_rate must be positive, got {self.learning_rate}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_steps < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise UserError("optim.warmup_steps, optim.max_grad_norm and optim.weight_decay must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Factor on the peak learning rate for optimiser step `step` (0-based).

    Warmup: (step + 1) / warmup_steps. Then constant 1, linear 1 -> 0, or
    cosine 0.5 (1 + cos(pi * progress)), progress = (step - warmup) / (total - warmup).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    params: Iterable[nn.Parameter], config: OptimConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the parameters that require grad, and its LambdaLR schedule over `total_steps`.

    The fused kernel: one AdamW step over SmolLM2-135M's parameters took about 0.1 s fused
    against 0.5-0.95 s for the default per-parameter loop on this CPU (benchmarks/cpu_kernels.py).
    """
    trainable = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, betas=tuple(config.betas), weight_decay=config.weight_decay, fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, config.warmup_steps, total_steps, config.schedule)
    )
    return optimizer, scheduler


def optimizer_step(
    params: list[nn.Parameter], optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float
) -> float:
    """Clip (if max_grad_norm > 0), step, advance the schedule, zero the grads; returns the pre-clip grad norm."""
    if max_grad_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    else:
        norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


# ---------------------------------------------------------------------------
# Data order and exact resume
# ---------------------------------------------------------------------------


def split_records(
    train: list[dict[str, Any]], eval_records: list[dict[str, Any]] | None, eval_fraction: float, source: str
) -> tuple[list, list]:
    """(train, eval): `eval_records` if given, else the last ceil(fraction * N) of `train` (at least 1)."""
    if eval_records:
        return train, eval_records
    held_out = max(1, round(len(train) * eval_fraction))
    if len(train) - held_out < 1:
        raise UserError(
            f"{source}: {len(train)} demonstration(s) are too few to hold out an eval split; "
            "give data.eval or more records"
        )
    return train[:-held_out], train[-held_out:]


def batch_indices(num_records: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the `batch_size` records used by optimiser step `step` (0-based).

    Records are drawn epoch by epoch, each epoch a fresh permutation seeded by
    (seed, epoch); a batch may straddle two epochs. A pure function of its
    arguments, so the data position of a resumed run is its step.
    """
    start = step * batch_size
    indices: list[int] = []
    while len(indices) < batch_size:
        epoch, offset = divmod(start + len(indices), num_records)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        permutation = torch.randperm(num_records, generator=generator).tolist()
        indices += permutation[offset : offset + batch_size - len(indices)]
    return indices


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (all, or a LoRA adapter plus heads), by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def training_state(
    model: nn.Module, optimizer: Any, scheduler: Any
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """What a checkpoint holds of a trained model: (trainable weights, optimiser and scheduler state)."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    return {"trainable": trainable_state(model)}, state


def load_training_state(
    tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any], model: nn.Module, optimizer: Any, scheduler: Any
) -> None:
    """Load what `training_state` returned into model, optimiser and scheduler."""
    expected = set(trainable_state(model))
    saved = tensors["trainable"]
    if set(saved) != expected:
        missing = sorted(expected ^ set(saved))[:3]
        raise UserError(
            f"checkpoint weights do not match this model (e.g. {missing}); resume with the run's own configuration"
        )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in saved:
                parameter.copy_(saved[name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
