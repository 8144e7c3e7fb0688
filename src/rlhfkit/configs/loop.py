"""The configuration of `rlhfkit loop`: one dataclass per concern, nested into `LoopConfig`; and one round's
reward-model run (`EnsembleRMConfig`).

The keys are `rlhfkit ppo`'s for the policy (`train.batch_size`, `optim.learning_rate`, `kl.coef`, `monitor.*`)
and `rlhfkit rm`'s under `rm.` for the reward model (`rm.train.steps`, `rm.optim.learning_rate`, `rm.pooling`),
each the same section class; the loop's first names are refused with the new one (`RENAMED_KEYS`).
"""

from __future__ import annotations

import dataclasses

from rlhfkit.assets import EVAL_PROMPTS, PROMPTS
from rlhfkit.config import GenerationConfig, LoRAConfig, ModelConfig, RewardConfig, field
from rlhfkit.configs.common import RunConfig, ScheduleConfig
from rlhfkit.configs.ppo import KLConfig, MonitorConfig, PPOBatchConfig
from rlhfkit.errors import UserError
from rlhfkit.models.heads import check_pooling
from rlhfkit.rewards.ai_judge import JudgeConfig
from rlhfkit.training import OptimConfig

SELECTIONS = ("ensemble", "random")
LABEL_SOURCES = ("judge", "ai", "server")


@dataclasses.dataclass
class LoopDataConfig:
    prompts: str = field(str(PROMPTS), "training prompts: the policy answers them, labellers compare the answers")
    eval_prompts: str = field(str(EVAL_PROMPTS), "held-out prompts: gold score and the reward model's held-out pairs")
    num_eval_prompts: int = field(32, "held-out prompts used (each gives one held-out pair and one gold-scored answer)")
    max_length: int = field(256, "tokens per prompt + response in the reward model")

    def __post_init__(self) -> None:
        if self.num_eval_prompts < 2 or self.max_length < 2:
            raise UserError(
                f"data.num_eval_prompts and data.max_length must be >= 2, got {self.num_eval_prompts}, "
                f"{self.max_length}"
            )


@dataclasses.dataclass
class LoopSettings:
    rounds: int = field(3, "rounds of sample -> choose pairs -> label -> reward model -> PPO")
    labels_per_round: int = field(16, "pairs labelled per round (the label budget is rounds x this)")
    candidates_per_round: int = field(
        0, "candidate pairs sampled per round, of which labels_per_round are chosen (0: 4 x labels_per_round)"
    )
    selection: str = field(
        "ensemble", "how pairs are chosen: ensemble (where the reward heads disagree most) or random"
    )
    ppo_iterations: int = field(4, "PPO iterations per round, continuing the policy of the round before")
    label_timeout: float = field(
        3600.0, "with --server: seconds to wait for a round's judgements before stopping (rerun to keep waiting)"
    )
    poll_seconds: float = field(2.0, "with --server: seconds between two looks at the server")

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.labels_per_round < 1 or self.ppo_iterations < 1:
            raise UserError(
                "loop.rounds, loop.labels_per_round and loop.ppo_iterations must be >= 1, got "
                f"{self.rounds}, {self.labels_per_round}, {self.ppo_iterations}"
            )
        if self.candidates_per_round and self.candidates_per_round < self.labels_per_round:
            raise UserError(
                f"loop.candidates_per_round {self.candidates_per_round} is below loop.labels_per_round "
                f"{self.labels_per_round}: there would be fewer pairs than labels to give"
            )
        if self.selection not in SELECTIONS:
            raise UserError(f"loop.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.label_timeout <= 0 or self.poll_seconds <= 0:
            raise UserError("loop.label_timeout and loop.poll_seconds must be positive")

    @property
    def candidate_pairs(self) -> int:
        return self.candidates_per_round or 4 * self.labels_per_round


@dataclasses.dataclass
class LabelSourceConfig:
    source: str = field(
        "judge",
        "who labels: judge (the `judge` reward source, with Bradley-Terry noise), ai (a judge model, `ai.*`) or "
        "server (people on a running `rlhfkit label serve`; also --server URL)",
    )
    noise: float = field(0.05, "for source=judge: T of P(a ≻ b) = σ((s_a - s_b)/T); 0: the judge's exact order")
    server: str = field("", "for source=server: the labelling server's URL (also --server; the token: --token)")
    ai: JudgeConfig = field(factory=JudgeConfig, doc="for source=ai: the AI judge (empty ai.model: the policy)")

    def __post_init__(self) -> None:
        if self.source not in LABEL_SOURCES:
            raise UserError(f"labels.source must be one of {', '.join(LABEL_SOURCES)}, got {self.source!r}")
        if self.noise < 0:
            raise UserError(f"labels.noise must be >= 0, got {self.noise}")
        if self.source == "server" and not self.server:
            raise UserError("labels.source=server needs the server's URL: --server http://HOST:PORT")


@dataclasses.dataclass
class LoopRewardModelConfig:
    """`rlhfkit rm`'s keys for the reward model that every round retrains on all labels so far, and its ensemble."""

    ensemble_size: int = field(4, "reward heads on the one backbone, each trained on its own bootstrap resample")
    train: ScheduleConfig = field(
        factory=lambda: ScheduleConfig(steps=40, batch_size=8, eval_every=40, checkpoint_every=40),
        doc="each round's schedule (`rlhfkit rm`'s train.*)",
    )
    optim: OptimConfig = field(
        factory=lambda: OptimConfig(learning_rate=2e-4), doc="optimiser (`rlhfkit rm`'s optim.*)"
    )
    pooling: str = field("mean", "where the heads read: mean (over the response tokens) or last (the EOS)")
    lora: LoRAConfig = field(factory=lambda: LoRAConfig(enabled=True), doc="LoRA on the reward model's backbone")

    def __post_init__(self) -> None:
        check_pooling(self.pooling, "rm.pooling")
        if self.ensemble_size < 1:
            raise UserError(f"rm.ensemble_size must be >= 1, got {self.ensemble_size}")


@dataclasses.dataclass
class LoopMonitorConfig(MonitorConfig):
    """`rlhfkit ppo`'s monitor keys with the loop's defaults: on, every iteration, the loop's judge as gold."""

    enabled: bool = field(
        True, "watch every round's PPO for reward hacking on held-out prompts; a stop ends the loop after that round"
    )
    gold: str = field(
        "",
        "the gold judge of the held-out samples, a reward.kind; empty: the loop's judge (judge.*), which "
        "monitor.action=rollback needs named",
    )
    eval_every: int = field(1, "evaluate every N PPO iterations (and before the first and after the last)")


@dataclasses.dataclass
class LoopConfig(RunConfig):
    model: ModelConfig = field(
        factory=lambda: ModelConfig(lora=LoRAConfig(enabled=True, top_layers=8)),
        doc="the initial policy (its LoRA: model.lora), the reference and the reward backbone",
    )
    data: LoopDataConfig = field(factory=LoopDataConfig, doc="prompts")
    generation: GenerationConfig = field(
        factory=lambda: GenerationConfig(max_new_tokens=32), doc="sampling, in every stage"
    )
    judge: RewardConfig = field(
        factory=RewardConfig, doc="the gold judge: gold_score, the held-out pairs, and the labels of source=judge"
    )
    labels: LabelSourceConfig = field(factory=LabelSourceConfig, doc="who labels the chosen pairs")
    loop: LoopSettings = field(factory=LoopSettings, doc="rounds, label budget, query selection")
    rm: LoopRewardModelConfig = field(factory=LoopRewardModelConfig, doc="the reward-model ensemble")
    train: PPOBatchConfig = field(
        factory=lambda: PPOBatchConfig(ppo_epochs=2), doc="each PPO iteration (`rlhfkit ppo`'s train.*)"
    )
    optim: OptimConfig = field(
        factory=lambda: OptimConfig(learning_rate=3e-4, keep_moments=True),
        doc="the policy's optimiser (its LoRA: model.lora); keep_moments carries AdamW's moments across rounds",
    )
    kl: KLConfig = field(factory=KLConfig, doc="KL to the initial policy (`rlhfkit ppo`'s kl.*)")
    monitor: LoopMonitorConfig = field(
        factory=LoopMonitorConfig, doc="reward-hacking monitor of every round's PPO (`rlhfkit ppo`'s monitor.* keys)"
    )
    out: str = field("", "output directory (default runs/loop-<time>); rerunning on it continues")

    def __post_init__(self) -> None:
        if self.judge.kind == "verifiable":
            raise UserError("judge.kind=verifiable scores 0 or 1: too coarse a gold judge for the loop's pairs")


# The loop's first names for `rlhfkit ppo`'s and `rlhfkit rm`'s keys: old name -> (new name, what else changed).
RENAMED_KEYS: dict[str, tuple[str, str]] = {
    "ppo.batch_size": ("train.batch_size", ""),
    "ppo.ppo_epochs": ("train.ppo_epochs", ""),
    "ppo.learning_rate": ("optim.learning_rate", ""),
    "ppo.kl_coef": ("kl.coef", ""),
    "rm.steps": ("rm.train.steps", ""),
    "rm.batch_size": ("rm.train.batch_size", ""),
    "rm.learning_rate": ("rm.optim.learning_rate", ""),
}


@dataclasses.dataclass
class EnsembleRMConfig:
    """One round's reward-model run (OUT/round-N/rm/config.yaml): the loop's `rm` keys and its files."""

    model: ModelConfig = field(factory=ModelConfig, doc="the backbone")
    train: str = field("", "every comparison labelled so far")
    eval: str = field("", "the held-out comparisons")
    max_length: int = field(256, "tokens per prompt + response")
    rm: LoopRewardModelConfig = field(factory=LoopRewardModelConfig, doc="ensemble, schedule, pooling, LoRA")
    seed: int = field(0, "seed of the data order and the bootstrap")
    out: str = field("", "output directory")

    @property
    def optim(self) -> OptimConfig:
        """The optimiser, where the run skeleton reads `optim.keep_moments`."""
        return self.rm.optim
