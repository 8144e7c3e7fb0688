"""What the SFT, reward-model and DPO trainers share: one model under AdamW on a `ScheduleConfig`.

`OptimizerTrainer` holds the `Trainer` parts that are the same for all three (optimiser set-up,
the optimiser step and its metrics, checkpoints, the Python API); `backward_in_micro_batches` is
their gradient accumulation; `trainer_command` is what their commands do.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfkit.algorithms import share_weight
from rlhfkit.config import add_config_arguments
from rlhfkit.runtime import RunDirectory, Runtime, fit, run_config
from rlhfkit.training import build_optimizer, load_training_state, optimizer_step, training_state


def backward_in_micro_batches(
    model: nn.Module,
    items: list[Any],
    micro_batch_size: int,
    runtime: Runtime,
    loss_of: Callable[[list[Any]], torch.Tensor],
    count_of: Callable[[list[Any]], float],
    total: float,
) -> float:
    """Backward the global batch's mean loss over this process's `items`, micro-batch by micro-batch; returns its share.

    `loss_of(chunk)` is a micro-batch's mean over what `count_of(chunk)` counts (tokens, records); each is
    weighted by its share of the global batch's `total` (`share_weight`), so the gradient is that of one
    mean over the whole batch however it is split into micro-batches and processes, and the returned
    shares sum over processes to the batch's loss. Gradients are all-reduced once, at the last micro-batch.
    """
    loss_sum = 0.0
    starts = range(0, len(items), micro_batch_size)
    for start in starts:
        chunk = items[start : start + micro_batch_size]
        loss = loss_of(chunk) * share_weight(count_of(chunk), total, runtime.num_processes)
        runtime.backward(loss, model, sync=start == starts[-1])
        loss_sum += loss.item() / runtime.num_processes
    return loss_sum


class OptimizerTrainer:
    """The `Trainer` parts of one model under AdamW on a `ScheduleConfig` (`config.train`, `config.optim`).

    A subclass sets `command`, `plot_keys`, `config` and `runtime`, calls `prepare_training(model)` once
    its model is built, and implements `train_step` (ending in `optimizer_metrics`), `evaluate`,
    `save_final` and `summary`.
    """

    command: str
    config: Any
    runtime: Runtime

    def prepare_training(self, model: nn.Module) -> None:
        """AdamW and its schedule over `model`'s trainable parameters, both prepared by the runtime."""
        train = self.config.train
        optimizer, self.scheduler = build_optimizer(model.parameters(), self.config.optim, train.steps)
        self.model, self.optimizer = self.runtime.prepare(model, optimizer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.step, self.total_steps = 0, train.steps
        self.eval_every, self.checkpoint_every = train.eval_every, train.checkpoint_every

    @property
    def unwrapped(self) -> nn.Module:
        return self.runtime.unwrap(self.model)

    def optimizer_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Step the optimiser on the accumulated gradients; `metrics` with the grad norm and the learning rate."""
        learning_rate = self.scheduler.get_last_lr()[0]
        grad_norm = optimizer_step(self.params, self.optimizer, self.scheduler, self.config.optim.max_grad_norm)
        self.step += 1
        return {**metrics, "train/grad_norm": grad_norm, "train/learning_rate": learning_rate}

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        return training_state(self.unwrapped, self.optimizer, self.scheduler)

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        load_training_state(tensors, state, self.unwrapped, self.optimizer, self.scheduler)

    def train(self, out: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
        """The Python API: the whole run into `out` (default: config.out); returns summary.json's figures."""
        return fit(self, RunDirectory.resolve(str(out or self.config.out), self.command, resume))


def trainer_command(
    trainer_class: Callable[[Any], OptimizerTrainer], config_class: type, headline: Callable[[dict], str]
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Path]]:
    """`add_arguments(parser)` and `run(args)` of `rlhfkit sft|rm|dpo`: the config's keys; the config
    (`run_config`), the run directory checked before any model loads, the whole run, then `headline(summary)`
    in one line on the main process; `run` returns the run directory (for --push-to-hub)."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, config_class)

    def run(args: argparse.Namespace) -> Path:
        config = run_config(config_class, args)
        run = RunDirectory.resolve(config.out, trainer_class.command, args.resume)
        summary = fit(trainer_class(config), run)
        if summary:
            print(f"rlhfkit {trainer_class.command}: {headline(summary)}")
        return run.path

    return add_arguments, run
