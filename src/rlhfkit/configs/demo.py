"""The configuration of `rlhfkit demo`, and the typed config of each of its stages built from it.

The demo's keys are few and flat (`rm_steps`, `ppo_learning_rate`, ...); `generate_config`, `label_config`,
`rm_config` and `ppo_config` turn them into the ordinary commands' configs, so every stage runs as the
command would with those keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlhfkit.assets import EVAL_PROMPTS, PROMPTS
from rlhfkit.config import (
    EMBEDDED_MODEL,
    GenerationConfig,
    LoRAConfig,
    ModelConfig,
    RewardConfig,
    check_precision,
    field,
)
from rlhfkit.configs.common import RunConfig, ScheduleConfig
from rlhfkit.configs.generate import GenerateConfig, GenerateDataConfig
from rlhfkit.configs.label import LabelConfig, LabelDataConfig, NoiseConfig
from rlhfkit.configs.ppo import KLConfig, MonitorConfig, PPOConfig, PPODataConfig, PPOTrainConfig
from rlhfkit.configs.reward import NormalizeConfig, RMConfig, RMDataConfig
from rlhfkit.errors import UserError
from rlhfkit.models.heads import check_pooling
from rlhfkit.training import OptimConfig


@dataclasses.dataclass
class DemoConfig(RunConfig):
    model: str = field(EMBEDDED_MODEL, "the initial policy (also the reward model's backbone and the reference)")
    prompts: str = field(str(PROMPTS), "training prompts")
    eval_prompts: str = field(str(EVAL_PROMPTS), "held-out prompts for the before/after evaluation")
    judge: str = field("sentiment", "the gold judge that stands in for people: sentiment, length, rouge or function")
    judge_function: str = field("", "package.module:function when judge=function")
    label_noise: float = field(
        0.05, "noise temperature T of the synthetic labels (Plackett-Luce rankings with weights exp(score/T))"
    )
    num_prompts: int = field(48, "prompts answered for the preference data")
    num_candidates: int = field(8, "candidate responses per prompt, ranked as one K-way ranking")
    max_new_tokens: int = field(32, "response length cap, in every stage")
    rm_steps: int = field(60, "reward-model optimiser steps")
    rm_batch_size: int = field(
        2, "rankings per reward-model step (each gives C(K,2) comparisons from K forward passes)"
    )
    rm_learning_rate: float = field(2e-4, "reward-model learning rate (LoRA)")
    rm_pooling: str = field(
        "mean",
        "where the reward head reads: mean (over the response tokens; learns the sentiment judge faster) or last",
    )
    rm_top_layers: int = field(
        8,
        "LoRA on the reward model's last N layers (0: all); the layers below then run forward only "
        "(half the stage's time; held-out accuracy 71.0 % against 71.4 % with every layer, RESULTS session 13)",
    )
    rm_heldout_fraction: float = field(
        0.2, "share of the prompts whose candidates are held out, labelled without noise, to measure the reward model"
    )
    ppo_steps: int = field(12, "PPO iterations")
    ppo_batch_size: int = field(16, "prompts per PPO iteration")
    ppo_epochs: int = field(2, "PPO epochs per iteration")
    ppo_learning_rate: float = field(
        3e-4, "PPO learning rate (LoRA on the top layers: 1e-4 barely moved it, 4e-4 pushed KL past 5)"
    )
    ppo_top_layers: int = field(
        8, "LoRA on the policy's last N layers (0: all); the update then skips the frozen layers below"
    )
    kl_coef: float = field(0.05, "β of the KL penalty")
    num_eval_prompts: int = field(32, "held-out prompts in the evaluation")
    dtype: str = field("auto", "forward-pass precision: auto, float32 or bfloat16 (as model.dtype)")

    def __post_init__(self) -> None:
        self.dtype = check_precision(self.dtype, "dtype")
        if self.judge not in ("sentiment", "length", "rouge", "function"):
            raise UserError(f"judge must be sentiment, length, rouge or function, got {self.judge!r}")
        if not 0 < self.rm_heldout_fraction < 1:
            raise UserError(f"rm_heldout_fraction must be in (0, 1), got {self.rm_heldout_fraction}")
        if self.label_noise <= 0:
            raise UserError(
                f"label_noise must be positive (noise-free rankings drop every prompt with tied scores), "
                f"got {self.label_noise}"
            )
        if self.num_candidates < 2:
            raise UserError(f"num_candidates must be at least 2 to form pairs, got {self.num_candidates}")
        check_pooling(self.rm_pooling, "rm_pooling")
        for key in ("rm_top_layers", "ppo_top_layers"):
            if getattr(self, key) < 0:
                raise UserError(f"{key} must be >= 0 (0: LoRA on every layer), got {getattr(self, key)}")

    @property
    def gold_judge(self) -> RewardConfig:
        """The judge that labels the preference data and scores the evaluation."""
        return RewardConfig(kind=self.judge, function=self.judge_function)


# A tiny random model and small stages: the same pipeline in well under two minutes (what the tests run).
QUICK = {
    "num_prompts": 16, "num_candidates": 3, "max_new_tokens": 8, "rm_steps": 12, "rm_batch_size": 4, "rm_top_layers": 1,
    "ppo_steps": 3, "ppo_batch_size": 8, "ppo_epochs": 1, "ppo_top_layers": 1, "num_eval_prompts": 8,
}  # fmt: skip


# ---------------------------------------------------------------------------
# 1-4: each stage's typed config, built from the demo's
# ---------------------------------------------------------------------------


def run_keys(config: DemoConfig, out: Path) -> dict[str, Any]:
    """What every stage takes from the demo as it is (the runtime, the seed), and its own directory."""
    return {"runtime": config.runtime, "seed": config.seed, "out": str(out)}


def trained_keys(
    config: DemoConfig, out: Path, lora: LoRAConfig, schedule: Any, learning_rate: float, checkpoints: int
) -> dict[str, Any]:
    """What a trained stage (rm, ppo) takes: the demo's model with `lora`; `schedule` (steps, batch) with
    `checkpoints` evenly spaced checkpoints; its learning rate."""
    schedule = dataclasses.replace(schedule, checkpoint_every=max(schedule.steps // checkpoints, 1))
    return {
        "model": ModelConfig(name=config.model, dtype=config.dtype, lora=lora),
        "train": schedule,
        "optim": OptimConfig(learning_rate=learning_rate),
        **run_keys(config, out),
    }


def generate_config(config: DemoConfig, out: Path) -> GenerateConfig:
    return GenerateConfig(
        model=ModelConfig(name=config.model, dtype=config.dtype),
        data=GenerateDataConfig(prompts=config.prompts, limit=config.num_prompts),
        generation=GenerationConfig(max_new_tokens=config.max_new_tokens),
        num_responses=config.num_candidates,
        **run_keys(config, out),
    )


def label_config(config: DemoConfig, candidates: Path, fmt: str, noise: float, out: Path) -> LabelConfig:
    return LabelConfig(
        data=LabelDataConfig(train=str(candidates)),
        reward=config.gold_judge,
        format=fmt,
        noise=NoiseConfig(temperature=noise),
        dtype=config.dtype,
        **run_keys(config, out),
    )


def rm_config(config: DemoConfig, rankings: Path, heldout: Path, out: Path) -> RMConfig:
    """A LoRA reward model on the rankings, evaluated at the end on the held-out prompts' comparisons."""
    schedule = ScheduleConfig(steps=config.rm_steps, batch_size=config.rm_batch_size, eval_every=config.rm_steps)
    lora = LoRAConfig(enabled=True, top_layers=config.rm_top_layers)
    return RMConfig(
        data=RMDataConfig(train=str(rankings), eval=str(heldout)),
        pooling=config.rm_pooling,
        normalize=NormalizeConfig(
            num_prompts=config.ppo_batch_size, generation=GenerationConfig(max_new_tokens=config.max_new_tokens)
        ),
        **trained_keys(config, out, lora, schedule, config.rm_learning_rate, checkpoints=2),
    )


def ppo_config(config: DemoConfig, reward_model: Path, out: Path) -> PPOConfig:
    """PPO with LoRA on the policy's top layers against the learned reward model (its minibatch derived).

    The reward-hacking monitor watches the learned reward against the demo's judge on held-out prompts
    and stops PPO when the two part ways (Gao et al. 2022).
    """
    lora = LoRAConfig(enabled=True, top_layers=config.ppo_top_layers)
    monitor = MonitorConfig(
        enabled=True,
        gold=config.judge,
        gold_function=config.judge_function,
        prompts=config.eval_prompts,
        num_prompts=min(config.num_eval_prompts, MonitorConfig.num_prompts),
        eval_every=max(config.ppo_steps // 4, 1),
    )
    schedule = PPOTrainConfig(steps=config.ppo_steps, batch_size=config.ppo_batch_size, ppo_epochs=config.ppo_epochs)
    return PPOConfig(
        data=PPODataConfig(prompts=config.prompts),
        generation=GenerationConfig(max_new_tokens=config.max_new_tokens),
        reward=RewardConfig(kind="model", model=str(reward_model)),
        kl=KLConfig(coef=config.kl_coef),
        monitor=monitor,
        **trained_keys(config, out, lora, schedule, config.ppo_learning_rate, checkpoints=4),
    )
