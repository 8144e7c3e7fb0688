"""The online preference loop (Christiano et al. 2017; Ziegler et al. 2019's online data collection).

    0 held out   the initial policy answers the held-out prompts twice; the gold judge orders each pair
                 without noise (the reward model's held-out accuracy) and scores the initial policy
    each round r = 1 .. R:
    1 sample     the current policy answers loop.candidates_per_round training prompts twice (candidate pairs)
    2 choose     loop.labels_per_round pairs: where the reward heads of round r−1 disagree most, or at random
                 (round 1 has no reward model yet: random)
    3 label      a judge with Bradley-Terry noise, an AI judge, or people on `rlhfkit label serve`
    4 reward     the reward-model ensemble retrained on every label so far (`loop.reward_model`)
    5 ppo        the policy continues from its checkpoint for loop.ppo_iterations against the ensemble's mean
    6 evaluate   gold judge's mean score of the policy on the held-out prompts; round.json, summary.json

The reward-hacking monitor (`monitor.*`) watches step 5 (`loop.policy`). When it stops PPO (or rolls
it back to its best gold evaluation), that round still finishes its evaluation and round.json (with
`monitor_stop`), and the loop ends there: summary.json's `monitor` entry names the round and the reason,
and a rerun of the same command finds the stop in round.json and trains nothing more.

Every step is a stage with a file (`OUT/round-N/candidates.jsonl`, `queries.jsonl`, `labels.jsonl`,
`rm/`, the PPO checkpoint at the round's last iteration, `round.json`), written atomically (labels
fsynced) once the step is complete; a stage whose file exists is not run again. So a loop killed
at any point and started again with the same command continues where it stopped and loses no
label. Everything random but PPO's own stream runs on a seed of its stage (`Runtime.forked_rng`),
so an interrupted loop continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.checkpoint import latest_checkpoint
from rlhfkit.config import ModelConfig, load_yaml_mapping, save_config, to_dict
from rlhfkit.configs.loop import EnsembleRMConfig, LoopConfig
from rlhfkit.data import load_records, prompt_text
from rlhfkit.errors import UserError
from rlhfkit.labeling.export import write_jsonl
from rlhfkit.loop.labels import AILabeller, JudgeLabeller, Labeller, judged_comparisons
from rlhfkit.loop.policy import RoundPPO, ppo_config, sample_responses
from rlhfkit.loop.reward_model import EnsembleRewardTrainer
from rlhfkit.loop.selection import most_disagreed, preference_disagreement, random_pairs
from rlhfkit.loop.server import LabelServer, ServerLabeller
from rlhfkit.models.ensemble import EnsembleRewardModel
from rlhfkit.recipes.ppo import PPOTrainer
from rlhfkit.rewards import build_reward, checked_scores, validate_records_for_reward
from rlhfkit.rewards.ensemble import EnsembleReward, ensemble_head_scores
from rlhfkit.runtime import RunDirectory, Runtime, fit
from rlhfkit.runtime.run import restore
from rlhfkit.tracking import read_jsonl, write_json_atomic
from rlhfkit.training import batch_indices

Record = dict[str, Any]
RERUN_KEYS = ("loop.label_timeout", "loop.poll_seconds", "labels.server", "runtime.threads")  # may change on a rerun
HELD_OUT, EVALUATION = 1, 2  # stage seeds: held-out pairs, and every round's gold evaluation (the same draw)


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def check_same_settings(config: LoopConfig, out: Path) -> None:
    """A loop continues only with the settings it started with (RERUN_KEYS aside): config.yaml is the record."""
    saved_path = out / "config.yaml"
    if not saved_path.exists():
        return
    saved, now = flat(load_yaml_mapping(saved_path)), flat(to_dict(config))
    for key in sorted(set(saved) | set(now)):
        if key not in RERUN_KEYS and key != "out" and saved.get(key) != now.get(key):
            raise UserError(
                f"{out} holds a loop run with {key}={saved.get(key)!r}, not {now.get(key)!r}; "
                "rerun with its own settings to continue it, or choose another --out"
            )


def file_stage(path: Path, make: Callable[[], list[Record]]) -> list[Record]:
    """The records in `path`, or `make()`'s, written there atomically and fsynced: the file marks the stage done."""
    if path.exists():
        return read_jsonl(path)
    records = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, records)
    return records


def distinct_pair(responses: list[str]) -> bool:
    return len(responses) == 2 and all(text.strip() for text in responses) and responses[0] != responses[1]


class OnlineLoop:
    """The rounds of one loop directory; `run()` continues from whatever is already there."""

    def __init__(self, config: LoopConfig, out: Path, server: LabelServer | None = None):
        self.config, self.out, self.server = config, out, server
        self.runtime = Runtime(config.model.dtype, config.seed)
        if self.runtime.num_processes > 1:
            raise UserError("rlhfkit loop runs in one process; start it without `accelerate launch`")
        self.prompts = load_records(config.data.prompts, "prompts")
        self.eval_prompts = load_records(config.data.eval_prompts, "prompts")[: config.data.num_eval_prompts]
        validate_records_for_reward(config.judge, self.eval_prompts, config.data.eval_prompts)
        validate_records_for_reward(config.judge, self.prompts, config.data.prompts)
        self.reward = EnsembleReward(None, None)  # type: ignore[arg-type]  # a model arrives with round 1's
        self.reward_round = 0
        judge = functools.partial(build_reward, config.judge, device=self.runtime.device)  # given the precision
        monitor_judges = config.monitor.enabled and not config.monitor.gold  # the monitor's gold: the loop's judge
        self.ppo = PPOTrainer(
            ppo_config(config, self.reward_model_dir(1), out / "ppo"), reward=self.reward, prompts=self.prompts,
            runtime=self.runtime, gold=judge if monitor_judges else None,
        )  # fmt: skip
        self.reward.tokenizer, self.reward.dtype = self.ppo.tokenizer, self.runtime.precision
        self.gold = self.ppo.watch.gold if monitor_judges else judge(self.runtime.precision)  # auto settled by now
        self.policy = RoundPPO(self.ppo, self.reward)
        checkpoint = latest_checkpoint(out / "ppo")
        if checkpoint is not None:  # the policy as the last finished round left it
            restore(self.policy, checkpoint)
        self.labeller = self.build_labeller()

    def build_labeller(self) -> Labeller:
        """People on the server, a judge model, or the gold judge with Bradley-Terry noise."""
        config, labels = self.config, self.config.labels
        if self.server is not None:
            return ServerLabeller(self.server, config.loop.labels_per_round, config.loop.label_timeout,
                                  config.loop.poll_seconds)  # fmt: skip
        if labels.source == "ai":
            return AILabeller(labels.ai, config.model.name, self.runtime.precision, config.seed)
        return JudgeLabeller(self.gold, config.judge.kind, labels.noise, config.seed)

    # -- where things are ------------------------------------------------------------------------

    def round_dir(self, round_number: int) -> Path:
        return self.out / f"round-{round_number}"

    def reward_model_dir(self, round_number: int) -> Path:
        return self.round_dir(round_number) / "rm" / "final"

    def isolated(self, stage: int, round_number: int = 0):
        """Run a block on its own seed, leaving PPO's random streams untouched."""
        return self.runtime.forked_rng((self.config.seed * 7919 + round_number * 101 + stage) % 2**32)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every round not yet finished; summary.json after each. Returns the summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out / "config.yaml")
        initial = self.held_out()
        summary: dict[str, Any] = {}
        for round_number in range(1, self.config.loop.rounds + 1):
            path = self.round_dir(round_number) / "round.json"
            if not path.exists():
                write_json_atomic(path, self.run_round(round_number))
            if self.server is not None:  # the labelling page shows the loop's progress (a missed report: now)
                self.server.report(round_number, json.loads(path.read_text()))
            summary = self.write_summary(initial, round_number)
            if summary.get("monitor", {}).get("round") is not None:
                break  # the monitor stopped this round's PPO: no further round
        return summary

    def held_out(self) -> dict[str, Any]:
        """Stage 0: held-out pairs of the initial policy, ordered by the gold judge; its gold score."""
        directory = self.out / "heldout"

        def pairs() -> list[Record]:
            with self.isolated(HELD_OUT):
                answers = sample_responses(self.ppo, self.eval_prompts, 2, self.config.generation)
            return [{**r, "responses": a} for r, a in zip(self.eval_prompts, answers) if distinct_pair(a)]

        candidates = file_stage(directory / "pairs.jsonl", pairs)
        kind = self.config.judge.kind
        comparisons = file_stage(
            directory / "comparisons.jsonl", lambda: judged_comparisons(self.gold, kind, candidates, 0.0, 0)
        )
        if not comparisons:
            raise UserError(
                f"the {kind} judge tells none of the {len(candidates)} held-out pairs apart; "
                "raise data.num_eval_prompts or generation.max_new_tokens"
            )
        return file_stage(directory / "gold.jsonl", lambda: [self.evaluate_policy()])[0]

    def run_round(self, round_number: int) -> dict[str, Any]:
        """Steps 1-6 of one round (each skipped where its file says it is done)."""
        directory = self.round_dir(round_number)
        candidates = file_stage(directory / "candidates.jsonl", lambda: self.sample_pairs(round_number))
        queries = file_stage(directory / "queries.jsonl", lambda: self.choose(round_number, candidates))
        labels = file_stage(directory / "labels.jsonl", lambda: self.labeller.label(round_number, queries))
        reward_model = self.train_reward_model(round_number, candidates)
        policy = self.continue_ppo(round_number)
        selection = json.loads((directory / "selection.json").read_text())
        return {
            "round": round_number,
            "labels": reward_model["train_records"],
            "labels_this_round": len(labels),
            "candidate_pairs": len(candidates),
            **selection,
            "reward_model_accuracy": reward_model["eval_accuracy"],
            "reward_model_head_accuracy": reward_model["eval_head_accuracy_mean"],
            "spread_range": reward_model["spread_range"],
            **policy,
            **self.evaluate_policy(),
        }

    def sample_pairs(self, round_number: int) -> list[Record]:
        """Step 1: two answers of the current policy to each of the round's training prompts."""
        count = self.config.loop.candidate_pairs
        records = [self.prompts[i] for i in batch_indices(len(self.prompts), count, round_number - 1, self.config.seed)]
        with self.isolated(1, round_number):
            answers = sample_responses(self.ppo, records, 2, self.config.generation)
        return [{**r, "responses": a} for r, a in zip(records, answers) if distinct_pair(a)]

    def choose(self, round_number: int, candidates: list[Record]) -> list[Record]:
        """Step 2: the pairs to label, and selection.json saying how they were chosen."""
        count = min(self.config.loop.labels_per_round, len(candidates))
        if count == 0:
            raise UserError(f"round {round_number}: the policy gave no pair of two different non-empty answers")
        selection: dict[str, Any] = {"selection": "random"}
        if round_number == 1 or self.config.loop.selection == "random":
            picks = random_pairs(len(candidates), count, self.config.seed + round_number)
        else:
            disagreement = self.disagreement(round_number - 1, candidates)
            picks = most_disagreed(disagreement, count)
            selection = {
                "selection": "ensemble",
                "disagreement_chosen": disagreement[picks].mean().item(),
                "disagreement_candidates": disagreement.mean().item(),
            }
        write_json_atomic(self.round_dir(round_number) / "selection.json", selection)
        return [candidates[i] for i in picks]

    def disagreement(self, reward_round: int, candidates: list[Record]) -> torch.Tensor:
        """(N,) variance over the heads of round `reward_round` of P(first ≻ second) for each candidate pair."""
        model = self.load_reward_model(reward_round)
        scores = [
            ensemble_head_scores(model, self.ppo.tokenizer, candidates, [c["responses"][k] for c in candidates], 16,
                                 self.runtime.precision)
            for k in (0, 1)
        ]  # fmt: skip
        return preference_disagreement(*scores)

    def load_reward_model(self, round_number: int) -> EnsembleRewardModel:
        """Round `round_number`'s ensemble, as the reward PPO maximises from now on."""
        if self.reward_round != round_number:
            with self.isolated(3, round_number):
                model = EnsembleRewardModel.load(self.reward_model_dir(round_number))
            self.reward.model = model.to(self.runtime.device).eval().requires_grad_(False)
            self.reward_round = round_number
        return self.reward.model

    def train_reward_model(self, round_number: int, candidates: list[Record]) -> dict[str, Any]:
        """Step 4: the ensemble on every label so far, normalised on this round's responses; its summary."""
        directory = self.round_dir(round_number) / "rm"
        if not (directory / "summary.json").exists():
            labels = [r for k in range(1, round_number + 1) for r in read_jsonl(self.round_dir(k) / "labels.jsonl")]
            if not labels:
                raise UserError(f"round {round_number}: no label yet to train the reward model on")
            train = self.round_dir(round_number) / "all_labels.jsonl"
            write_jsonl(train, labels)
            config = EnsembleRMConfig(
                model=ModelConfig(name=self.config.model.name, dtype=self.runtime.precision),
                train=str(train),
                eval=str(self.out / "heldout" / "comparisons.jsonl"),
                max_length=self.config.data.max_length,
                rm=self.config.rm,
                seed=self.config.seed + round_number,
                out=str(directory),
            )
            responses = [(c, text) for c in candidates for text in c["responses"]]
            with self.isolated(4, round_number):
                trainer = EnsembleRewardTrainer(config, ([c for c, _ in responses], [t for _, t in responses]))
                fit(trainer, RunDirectory.resolve(str(directory), "rm", latest_checkpoint(directory) is not None))
        return json.loads((directory / "summary.json").read_text())

    def continue_ppo(self, round_number: int) -> dict[str, Any]:
        """Step 5: PPO from the last round's checkpoint up to this round's last iteration, against this ensemble."""
        self.load_reward_model(round_number)
        iterations, directory = self.config.loop.ppo_iterations, self.out / "ppo"
        self.ppo.config.reward.model = str(self.reward_model_dir(round_number))  # config.yaml names this round's
        self.policy.start_round(round_number, round_number * iterations)
        resume = latest_checkpoint(directory) is not None  # the end of the round before (or, killed after it, of this)
        fit(self.policy, RunDirectory.resolve(str(directory), "ppo", resume))
        first = (round_number - 1) * iterations
        history = [h for h in read_jsonl(directory / "metrics.jsonl") if first < h["step"] <= round_number * iterations]
        figures = {
            "ppo_iterations": self.ppo.step,
            "reward_spread": sum(h["reward/spread"] for h in history) / len(history),
            "learned_reward_train": history[-1]["reward/score_mean"],
            "kl": history[-1]["kl/mean"],
        }
        if self.config.monitor.enabled:
            monitor = json.loads((directory / "summary.json").read_text())["monitor"]
            stopped = monitor["reason"] is not None
            figures["monitor_stop"] = (
                {k: monitor[k] for k in ("stopped_at", "reason", "rolled_back_to")} if stopped else None
            )
        return figures

    def evaluate_policy(self) -> dict[str, Any]:
        """Step 6: the gold judge's mean score of the policy on the held-out prompts (the same draw every round)."""
        with self.isolated(EVALUATION):
            responses = [a[0] for a in sample_responses(self.ppo, self.eval_prompts, 1, self.config.generation)]
        prompts = [prompt_text(r) for r in self.eval_prompts]
        figures = {
            "gold_score": checked_scores(self.gold, prompts, responses, self.eval_prompts).mean().item(),
            "response_words": sum(len(text.split()) for text in responses) / len(responses),
        }
        if self.reward.model is not None:
            figures["learned_reward"] = sum(self.reward(prompts, responses, self.eval_prompts)) / len(responses)
            figures["eval_spread"] = sum(self.reward.last_spread) / len(responses)
        return figures

    def write_summary(self, initial: dict[str, Any], last_round: int) -> dict[str, Any]:
        rounds = [json.loads((self.round_dir(k) / "round.json").read_text()) for k in range(1, last_round + 1)]
        summary = {
            "rounds": rounds,
            "gold_score_initial": initial["gold_score"],
            "heldout_pairs": len(read_jsonl(self.out / "heldout" / "comparisons.jsonl")),
            "labels_source": self.config.labels.source,
            "selection": self.config.loop.selection,
            "label_budget": self.config.loop.rounds * self.config.loop.labels_per_round,
            "policy": str(self.out / "ppo" / "final"),
            "reward_model": str(self.reward_model_dir(last_round)),
        }
        if self.config.monitor.enabled:
            monitor = json.loads((self.out / "ppo" / "summary.json").read_text())["monitor"]
            stopped_in = next((r["round"] for r in rounds if r.get("monitor_stop")), None)
            summary["monitor"] = {**monitor, "round": stopped_in}
        write_json_atomic(self.out / "summary.json", summary)
        return summary
