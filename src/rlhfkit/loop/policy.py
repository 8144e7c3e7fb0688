"""The policy across rounds: one PPO run (OUT/ppo) that each round continues for `loop.ppo_iterations`.

The PPO trainer is built once, with the reward-model ensemble as its reward source (`EnsembleReward`,
its model replaced each round). Round r runs `fit` up to iteration r·N from the checkpoint written
at the end of round r−1: policy, value head, optimiser, KL controller and random state carry over
exactly, whether the process ran the round before or was restarted. The reference stays the
initial policy (with LoRA, the base with the adapter off), so the KL leash never moves.

The reward-hacking monitor (`monitor.*`, `recipes.ppo_monitor`) watches the whole PPO run: held-out
evaluations every `monitor.eval_every` iterations, the gold judge by default the loop's own, the
spread against the range in this round's reward.json. Its state lives in PPO's checkpoint, so it
carries across rounds like the optimiser. Each round retrains and renormalises the reward model, so
its evaluations carry the round as their `segment`: the proxy's trend restarts every round, while
the gold score's start stays the run's first evaluation (the gold judge never changes).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from rlhfkit.config import GenerationConfig, ModelConfig, RewardConfig
from rlhfkit.configs.generate import GenerateConfig
from rlhfkit.configs.loop import LoopConfig
from rlhfkit.configs.ppo import MonitorConfig, PPOConfig, PPODataConfig, PPOTrainConfig
from rlhfkit.recipes.generate import generate_candidates
from rlhfkit.recipes.ppo import PPOTrainer
from rlhfkit.rewards.ensemble import EnsembleReward
from rlhfkit.runtime import StepOutput


def ppo_config(config: LoopConfig, reward_model: Path, out: Path) -> PPOConfig:
    """PPO over every round (its schedule spans rounds x iterations), checkpointed at each round's end.

    Each round completes a run (final/ is the policy so far); `optim.keep_moments` (the loop's default)
    keeps AdamW's moments in that checkpoint, so the next round continues the optimiser too.
    """
    iterations = config.loop.ppo_iterations
    return PPOConfig(
        model=copy.deepcopy(config.model),  # PPO settles model.dtype=auto on its copy; the loop's stays as given
        data=PPODataConfig(prompts=config.data.prompts),
        generation=config.generation,
        reward=RewardConfig(kind="model", model=str(reward_model)),
        kl=copy.deepcopy(config.kl),
        train=PPOTrainConfig(
            **dataclasses.asdict(config.train), steps=config.loop.rounds * iterations, checkpoint_every=iterations
        ),
        optim=copy.deepcopy(config.optim),
        monitor=round_monitor(config),
        runtime=config.runtime,
        seed=config.seed,
        out=str(out),
    )


def round_monitor(config: LoopConfig) -> MonitorConfig:
    """The loop's monitor section for PPO: an empty `monitor.gold` is the loop's judge (`judge.*`)."""
    if config.monitor.gold:
        return copy.deepcopy(config.monitor)
    judge = config.judge
    return dataclasses.replace(config.monitor, gold=judge.kind, gold_function=judge.function, gold_model=judge.model)


class RoundPPO:
    """The PPO trainer run up to the end of one round, with the ensemble's spread added to its metrics.

    Composition: every part of the `Trainer` protocol is the PPO trainer's, but `total_steps`
    (this round's last iteration) and `reward/spread` (the mean spread of the heads on the
    iteration's samples, beside the monitor's own `monitor/spread` on the held-out prompts).
    """

    def __init__(self, trainer: PPOTrainer, reward: EnsembleReward):
        self.trainer, self.reward, self.total_steps = trainer, reward, 0
        self.command, self.config, self.runtime = trainer.command, trainer.config, trainer.runtime
        self.checkpoint_every, self.eval_every = trainer.checkpoint_every, trainer.eval_every
        self.plot_keys = (*trainer.plot_keys, "reward/spread")

    @property
    def stop_reason(self) -> str | None:
        """The monitor's reason to end the run (`fit` reads it; the loop then ends after this round)."""
        return self.trainer.stop_reason

    def start_round(self, round_number: int, total_steps: int) -> None:
        """The next `fit` runs up to `total_steps`; the monitor's proxies from now on are this round's reward."""
        self.total_steps, self.trainer.watch.segment = total_steps, round_number

    @property
    def step(self) -> int:
        return self.trainer.step

    @step.setter
    def step(self, value: int) -> None:
        self.trainer.step = value

    def train_step(self) -> StepOutput:
        metrics, samples = self.trainer.train_step()
        spreads = self.reward.last_spread
        return {**metrics, "reward/spread": sum(spreads) / len(spreads)}, samples

    def evaluate(self) -> StepOutput:
        return self.trainer.evaluate()

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        return self.trainer.checkpoint_state()

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        self.trainer.load_checkpoint_state(tensors, state)

    def save_final(self, directory: Path) -> None:
        self.trainer.save_final(directory)

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        return self.trainer.summary(out, history)


def sample_responses(
    trainer: PPOTrainer, records: list[dict[str, Any]], per_prompt: int, generation: GenerationConfig
) -> list[list[str]]:
    """`per_prompt` responses to each record from the trainer's current policy (`rlhfkit generate`'s sampler)."""
    model = trainer.unwrapped.eval()
    settings = GenerateConfig(
        model=ModelConfig(name=trainer.config.model.name, dtype=trainer.runtime.precision),
        generation=generation,
        num_responses=per_prompt,
        batch_size=16,
    )
    return generate_candidates(model.policy, trainer.tokenizer, records, settings)
