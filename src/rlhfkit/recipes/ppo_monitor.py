"""PPO's evaluation for the reward-hacking monitor (`monitor.*`): held-out prompts, proxy, gold, KL, degeneration.

Every evaluation the policy answers the same held-out prompts (never trained on) on the same seed
(one per process), so that two evaluations differ by the policy alone, and without moving training's
random streams:

    1 sample   one response per held-out prompt, as the rollout samples (`PPOTrainer.generate`)
    2 score    proxy: the run's own reward source; gold: the independent judge `monitor.gold`;
               spread: the reward ensemble's disagreement, when the reward source is an ensemble
    3 KL       per response, to the reference, as `kl/mean`
    4 signals  distinct-1/2, seq-rep-4 and length over the response tokens
    5 decide   `rewards.hacking.HackingMonitor`: continue, or stop with a one-line reason

Figures are over all processes' responses. With `monitor.action=rollback` the trainable weights of
the evaluation with the best gold score so far are kept (on the CPU, and in every checkpoint), and
final/ holds them when the monitor stops the run.

`segment` tags each evaluation with the reward that scored its proxy: `rlhfkit loop` sets it to the
round, because every round retrains and renormalises the reward model, so a proxy of round r and one
of round r+1 are on different scales. The over-optimisation rule compares proxies within a segment
only (its trend restarts each round); the gold judge, the KL and the degeneration signals are on one
scale for the whole run, so the gold-below-start and distinct-2 rules keep the run's first evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import RewardConfig
from rlhfkit.configs.ppo import PPOConfig
from rlhfkit.data import load_records, prompt_text
from rlhfkit.errors import UserError
from rlhfkit.models.heads import REWARD_FILE
from rlhfkit.rewards import RewardFn, build_reward, checked_scores, validate_records_for_reward
from rlhfkit.rewards.hacking import Evaluation, HackingMonitor, StopRules, degeneration_signals, plot_over_optimisation
from rlhfkit.rollout.experience import sequence_kl
from rlhfkit.rollout.generation import decode_responses
from rlhfkit.rollout.scoring import score_responses
from rlhfkit.runtime import Runtime
from rlhfkit.training import trainable_state

BEST_WEIGHTS = "monitor_best"  # the checkpoint's tensor group of the best-gold weights (monitor.action=rollback)


def spread_range_of(reward: RewardFn, config: RewardConfig) -> list[float] | None:
    """The spread range seen in the reward model's training: the source's own, or its reward.json's; None: unknown."""
    if getattr(reward, "spread_range", None) is not None:
        return list(reward.spread_range)  # type: ignore[attr-defined]
    reward_file = Path(config.model, REWARD_FILE)
    if config.kind == "model" and reward_file.is_file():
        spread_range = json.loads(reward_file.read_text()).get("spread_range")
        return list(spread_range) if spread_range is not None else None
    return None


class HeldOutMonitor:
    """Steps 1-5 of the module docstring for a `PPOTrainer`; with `monitor.enabled` false, nothing at all."""

    def __init__(self, config: PPOConfig, runtime: Runtime, reward_from_config: bool, builds_gold: bool = True):
        """`builds_gold` False: the caller sets `gold` (the online loop, its own judge: one model loaded once)."""
        self.config, self.runtime = config.monitor, runtime
        self.enabled = config.monitor.enabled
        self.eval_every = config.monitor.eval_every if self.enabled else 0
        self.monitor = HackingMonitor(
            StopRules(config.monitor.patience, config.monitor.gold_tolerance, config.monitor.distinct_2_fraction)
        )
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.rolled_back_to: int | None = None
        self.segment = 0  # the reward whose proxy the next evaluations measure (the online loop's round)
        if not self.enabled:
            return
        records = load_records(config.monitor.prompts, "prompts")[: config.monitor.num_prompts]
        self.records = records[: len(records) - len(records) % runtime.num_processes]  # an equal share each
        if not self.records:
            raise UserError(
                f"{len(records)} held-out prompts (monitor.num_prompts of {config.monitor.prompts}) cannot be "
                f"shared by the {runtime.num_processes} processes; raise monitor.num_prompts"
            )
        gold = config.monitor.gold_reward
        for source, checked in ((config.reward, reward_from_config), (gold, gold is not None)):
            if checked:
                validate_records_for_reward(source, self.records, config.monitor.prompts)  # type: ignore[arg-type]
        self.gold = build_reward(gold, config.model.dtype, runtime.device) if gold is not None and builds_gold else None

    @property
    def stop_reason(self) -> str | None:
        return self.monitor.reason

    def evaluate(self, trainer: Any) -> dict[str, float]:
        """One evaluation of `trainer`'s current policy (a `PPOTrainer`): the monitor/* figures ({} when off)."""
        if not self.enabled:
            return {}
        evaluation = self.measure(trainer)
        self.monitor.observe(evaluation)
        if self.config.action == "rollback" and self.monitor.best() is evaluation:
            self.best_weights = {k: v.detach().cpu().clone() for k, v in trainable_state(trainer.unwrapped).items()}
        return self.monitor.metrics()

    @torch.no_grad()
    def measure(self, trainer: Any) -> Evaluation:
        """Steps 1-4 on this process's share of the held-out prompts; figures over all processes."""
        runtime, records = self.runtime, self.runtime.shard(self.records)
        with runtime.forked_rng(trainer.config.seed + runtime.process_index):  # the same draws every evaluation
            samples = trainer.generate(records)
        responses, prompts = decode_responses(trainer.tokenizer, samples), [prompt_text(r) for r in records]
        proxy = checked_scores(trainer.reward, prompts, responses, records, runtime.device)
        spread = getattr(trainer.reward, "last_spread", None)
        gold = checked_scores(self.gold, prompts, responses, records, runtime.device) if self.gold else None
        logprobs, ref_logprobs, _, _ = score_responses(
            trainer.unwrapped, trainer.reference, samples, trainer.config.generation.temperature, runtime.precision,
            trainer.config.micro_batch_size,
        )  # fmt: skip
        kl = sequence_kl(logprobs, ref_logprobs, samples.response_mask)
        ids, mask = runtime.gather(samples.response_ids).cpu(), runtime.gather(samples.response_mask.long()).cpu() > 0
        return Evaluation(
            step=trainer.step,
            proxy=self._mean(proxy),
            kl=self._mean(kl),
            gold=self._mean(gold) if gold is not None else None,
            spread=self._mean(torch.tensor(spread, device=runtime.device)) if spread else None,
            spread_range=spread_range_of(trainer.reward, trainer.config.reward),  # the online loop retrains it
            degeneration=degeneration_signals([row[keep].tolist() for row, keep in zip(ids, mask)]),
            segment=self.segment,
        )

    def _mean(self, per_response: torch.Tensor) -> float:
        """The mean over every process's responses."""
        return float(self.runtime.gather(per_response.float().unsqueeze(1)).mean())

    # -- what PPOTrainer's checkpoint, final/ and summary hold of it --------------------------------

    def save_into(self, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        state["monitor"] = self.monitor.state_dict()
        if self.best_weights is not None:
            tensors[BEST_WEIGHTS] = self.best_weights

    def load_from(self, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        if self.enabled and "monitor" in state:  # a run that had the monitor off so far starts it here
            self.monitor.load_state_dict(state["monitor"])
            self.best_weights = tensors.get(BEST_WEIGHTS)

    def roll_back(self, model: torch.nn.Module) -> None:
        """monitor.action=rollback on a stopped run: the best-gold evaluation's weights into `model`, before final/."""
        if self.stop_reason is None or self.config.action != "rollback" or self.best_weights is None:
            return
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in self.best_weights:
                    parameter.copy_(self.best_weights[name])
        self.rolled_back_to = self.monitor.best().step  # type: ignore[union-attr]

    def summary(self, out: Path) -> dict[str, Any]:
        """summary.json's `monitor` entry, and over_optimisation.png (proxy vs gold vs KL) beside it."""
        if not self.enabled:
            return {}
        plot_over_optimisation(self.monitor.history, self.monitor.stopped_at, out / "over_optimisation.png")
        best = self.monitor.best()
        entry = {
            **self.monitor.summary(),
            "best_gold_step": best.step if best else None,
            "rolled_back_to": self.rolled_back_to,
        }
        return {"monitor": entry}
