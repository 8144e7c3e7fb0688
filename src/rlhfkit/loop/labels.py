"""Who labels a round's pairs: a judge (with Bradley-Terry noise), an AI judge, or people (`loop.server`).

A labeller turns pairs (candidates records with two responses) into comparison records with
`label(round_number, pairs)`; it may label fewer pairs than it is given (a judge's exact ties say
nothing and are skipped). The synthetic labeller is `rlhfkit label`'s own (`compare_pairs`);
the AI judge is `rlhfkit label --judge ai`'s (`ai_comparisons`).
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from rlhfkit.data import prompt_text
from rlhfkit.labeling.synthetic import compare_pairs
from rlhfkit.rewards import RewardFn, checked_scores
from rlhfkit.rewards.ai_judge import JudgeConfig, ai_comparisons, constitution_path, load_constitution, load_judge

Record = dict[str, Any]


class Labeller(Protocol):
    def label(self, round_number: int, pairs: list[Record]) -> list[Record]: ...


def judge_scores(judge: RewardFn, pairs: list[Record]) -> list[list[float]]:
    """The judge's score of both responses of every pair, from one call."""
    records = [pair for pair in pairs for _ in pair["responses"]]
    responses = [text for pair in pairs for text in pair["responses"]]
    flat = checked_scores(judge, [prompt_text(r) for r in records], responses, records).tolist()
    return [flat[2 * i : 2 * i + 2] for i in range(len(pairs))]


def judged_comparisons(
    judge: RewardFn, judge_name: str, pairs: list[Record], temperature: float, seed: int
) -> list[Record]:
    """A comparison per pair the judge separates: its exact order at T = 0, a noisy person's draw at T > 0."""
    rng = random.Random(seed)
    comparisons = []
    for pair, scores in zip(pairs, judge_scores(judge, pairs)):
        comparisons += compare_pairs(pair, scores, temperature, judge_name, rng)[0]
    return comparisons


class JudgeLabeller:
    """Christiano et al.'s synthetic labeller: P(a ≻ b) = σ((s_a − s_b)/T) under a reward source's scores."""

    def __init__(self, judge: RewardFn, judge_name: str, temperature: float, seed: int):
        self.judge, self.judge_name, self.temperature, self.seed = judge, judge_name, temperature, seed

    def label(self, round_number: int, pairs: list[Record]) -> list[Record]:
        return judged_comparisons(self.judge, self.judge_name, pairs, self.temperature, self.seed + round_number)


class AILabeller:
    """A judge model's soft labels (RLAIF), one sampled principle per pair; the model loads on first use."""

    def __init__(self, config: JudgeConfig, policy_name: str, dtype: str, seed: int):
        self.config, self.name, self.dtype, self.seed = config, config.model or policy_name, dtype, seed
        self.principles = load_constitution(constitution_path(config.constitution))
        self.judge: tuple[Any, Any] | None = None

    def label(self, round_number: int, pairs: list[Record]) -> list[Record]:
        if self.judge is None:
            self.judge = load_judge(self.name, self.config.labels)
        firsts, seconds = [p["responses"][0] for p in pairs], [p["responses"][1] for p in pairs]
        rng = random.Random(self.seed + round_number)
        return ai_comparisons(*self.judge, pairs, firsts, seconds, self.principles, self.config, self.dtype, rng)
