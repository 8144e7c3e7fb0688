"""`rlhfkit ppo`: PPO against a reward source with a KL leash to a frozen reference.

One iteration, as in Ziegler et al. 2019 / Stiennon et al. 2020 / InstructGPT:

    1 generate   sample K responses per prompt (left-padded prompts, temperature, top-k/top-p, stop at EOS)
    2 score      reward source -> one score per response; reference log-probs; values
    3 reward     per-token -β·KL plus the score on the last real token
    4 advantage  GAE(γ, λ) on the rollout-time values, whitened over the batch
    5 update     K epochs of shuffled minibatches (`training.ppo.PPOUpdate`): clipped surrogate (or the
                 PPO paper's adaptive-KL surrogate), clipped value loss, entropy bonus, PPO-ptx
    6 log        metrics and samples; adapt β (`rlhfkit.runtime.fit` owns checkpoints, final/, summary)
    7 evaluate   monitor.enabled: proxy vs gold judge, KL, degeneration on held-out prompts; stop when hacked

GRPO, RLOO and REINFORCE++ (`algorithm.advantage`; `rlhfkit grpo` and `rlhfkit rloo`) are this
same iteration without a value model: step 4 takes its baseline from the scores of the K responses
to a prompt, or of the whole batch (`rollout.advantages`), and step 5 has no value loss. The KL may
act as a loss term instead of a reward penalty (`algorithm.kl_in`), and the per-token losses are
reduced by a named aggregation (`algorithm.loss_aggregation`; token_mean is PPO's).

Where this departs from a naive implementation, and why:
- Step 1 keeps the log-probs and last hidden states that sampling already computed, so the
  policy is not run a second time to score its own samples (the old log-probs are exactly
  the distribution that was sampled from). Only the reference (and a separate critic) run in step 2.
  With `generation.engine=vllm` a vLLM engine in this process samples from the policy's pushed
  weights (`rollout.vllm_engine`) and keeps no log-probs: the policy's own forward pass in step 2
  gives the old log-probs, so the first ratio of an iteration is exactly 1.
- Every process draws the same global batch of prompts and keeps its share (whole groups: prompts
  are sharded, then each sampled K times). The loss of a minibatch is its aggregation over the whole
  minibatch: each micro-batch's is weighted by `share_weight` of its tokens (or responses, by the
  aggregation), so gradient accumulation and N processes give the update of one process holding the
  whole minibatch. Advantages are whitened (group statistics taken) over all processes' rows.
- Early stopping (ppo.target_kl) is checked after every minibatch, on the approx-KL of all processes.
- Precision: `model.dtype=bfloat16` runs full-sequence passes under bf16 autocast over fp32 weights;
  log-probs, advantages and losses are fp32 either way.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from rlhfkit.algorithms import AdaptiveKLController, FixedKLController, RunningMeanStd
from rlhfkit.config import add_config_arguments
from rlhfkit.configs.ppo import PPOConfig
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.errors import UserError
from rlhfkit.models import load_tokenizer
from rlhfkit.models.actor_critic import ActorCritic, load_actor_critic
from rlhfkit.models.loading import save_policy
from rlhfkit.recipes.ppo_monitor import HeldOutMonitor
from rlhfkit.rewards import RewardFn, build_reward, checked_scores, validate_records_for_reward
from rlhfkit.rollout.engines import build_engine
from rlhfkit.rollout.experience import Experience, build_experience, shape_scores
from rlhfkit.rollout.generation import Samples as Rollout
from rlhfkit.rollout.generation import decode_responses, left_truncate
from rlhfkit.rollout.scoring import rollout_metrics, score_responses
from rlhfkit.runtime import RunDirectory, Runtime, Samples, StepOutput, fit, run_config
from rlhfkit.tracking import phase
from rlhfkit.training import batch_indices, build_optimizer, load_training_state, training_state
from rlhfkit.training.ppo import PPOUpdate

__all__ = ["PPOConfig", "PPOTrainer"]


class PPOTrainer:
    """PPO for a causal LM against any reward callable `(prompts, responses, records) -> scores`.

    >>> PPOTrainer(PPOConfig(), reward=my_reward, prompts=[{"prompt": "Hi"}, ...]).train("runs/short")
    """

    plot_keys = ("reward/score_mean", "kl/mean", "policy/clipfrac", "value/explained_variance")
    stop_reason = property(lambda self: self.watch.stop_reason)  # set: the monitor ends the run (`fit` reads it)

    def __init__(
        self,
        config: PPOConfig,
        reward: RewardFn | None = None,
        prompts: list[dict[str, Any]] | None = None,
        runtime: Runtime | None = None,
        command: str = "ppo",
        gold: Callable[[str], RewardFn] | None = None,
    ):
        """`gold`: builds the monitor's gold judge at the run's settled precision (the online loop's judge, which it
        then shares, so that a reward-model judge loads once); None: the judge `monitor.gold` names."""
        self.config, self.command = config, command
        self.runtime = runtime = runtime or Runtime(config.model.dtype, config.seed)
        self.prompts = load_records(prompts if prompts is not None else config.data.prompts, "prompts")
        if not self.prompts:
            raise UserError(f"{config.data.prompts}: holds no prompts")
        config.check_processes(runtime.num_processes)
        if reward is None:
            validate_records_for_reward(config.reward, self.prompts, config.data.prompts)
        self.watch = HeldOutMonitor(  # checked before models load
            config, runtime, reward_from_config=reward is None, builds_gold=gold is None
        )

        self.tokenizer = load_tokenizer(config.model.name)
        actor_critic, reference = load_actor_critic(
            config.model.name, self.tokenizer, config.model.lora, config.critic_source, not config.algorithm.critic_free
        )
        runtime.settle_precision(config.model, actor_critic.policy)
        if gold is not None and self.watch.enabled:
            self.watch.gold = gold(runtime.precision)
        self.engine = build_engine(  # the run's one sampler (generation.engine), refused here before any output
            config.generation, config.model.name, actor_critic.policy, runtime.precision, runtime.num_processes
        )
        self.reward = reward if reward is not None else build_reward(config.reward, config.model.dtype, runtime.device)
        optimizer, self.scheduler = build_optimizer(actor_critic.parameters(), config.optim, config.optimizer_steps)
        self.actor_critic, self.optimizer = runtime.prepare(actor_critic, optimizer)
        self.reference = reference.to(runtime.device) if reference is not None else None
        self.kl_controller = (
            AdaptiveKLController(config.kl.coef, config.kl.target, config.kl.horizon)
            if config.kl.adaptive
            else FixedKLController(config.kl.coef)
        )
        self.update = PPOUpdate(
            config, runtime, self.actor_critic, self.optimizer, self.scheduler, lambda: self.kl_controller.value,
            self.tokenizer, load_records(config.data.ptx, "demonstrations") if config.data.ptx else [],
        )  # fmt: skip
        self.score_moments = RunningMeanStd() if config.score.normalize else None
        self.step, self.total_steps = 0, config.train.steps
        self.eval_every, self.checkpoint_every = self.watch.eval_every, config.train.checkpoint_every

    @property
    def unwrapped(self) -> ActorCritic:
        return self.runtime.unwrap(self.actor_critic)

    # -- steps 1-4: the rollout ------------------------------------------------------------

    def prompt_batch(self, step: int) -> list[dict[str, Any]]:
        """This process's share of iteration `step`'s prompts (epoch-wise permutations, seeded), each K times.

        The K copies of a prompt are consecutive rows, and a process holds whole groups (prompts are
        sharded before they are repeated), as the group estimators require.
        """
        indices = batch_indices(len(self.prompts), self.config.train.batch_size, step, self.config.seed)
        group_size = self.config.algorithm.responses_per_prompt
        return [record for record in self.runtime.shard([self.prompts[i] for i in indices]) for _ in range(group_size)]

    def rollout(self, records: list[dict[str, Any]]) -> tuple[Experience, list[str], dict[str, float]]:
        """Steps 1-4: generate, score, shape rewards, advantages. Returns (experience, responses, timings)."""
        started = time.perf_counter()
        phase("generate", 1, 3)
        samples = self.generate(records)
        generated = time.perf_counter()
        phase("score", 2, 3)
        experience, responses = self.score(samples, records)
        timings = {"time/generate_s": generated - started, "time/score_s": time.perf_counter() - generated}
        return experience, responses, timings

    def generate(self, records: list[dict[str, Any]]) -> Rollout:
        """Step 1: one sampled response per prompt record."""
        model, limit = self.unwrapped.eval(), self.config.data.max_prompt_length
        texts = [left_truncate(self.tokenizer, format_prompt(self.tokenizer, r), limit) for r in records]
        # without a separate critic, the sampling pass's log-probs (and hidden states for a value head) save a forward
        return self.engine.sample(
            model.policy, self.tokenizer, texts, self.config.generation, self.runtime.precision,
            keep_scores=model.scores_while_sampling, keep_hidden=model.shares_trunk,
        )  # fmt: skip

    def score(self, samples: Rollout, records: list[dict[str, Any]]) -> tuple[Experience, list[str]]:
        """Steps 2-4 on sampled responses: scores, reference log-probs, values, shaped rewards, advantages."""
        config, runtime = self.config, self.runtime
        responses = decode_responses(self.tokenizer, samples)
        prompts = [prompt_text(r) for r in records]
        raw_scores = checked_scores(self.reward, prompts, responses, records, runtime.device)
        logprobs, ref_logprobs, values, frozen_states = score_responses(
            self.unwrapped, self.reference, samples, config.generation.temperature, runtime.precision,
            config.micro_batch_size,
        )  # fmt: skip
        scores = shape_scores(
            raw_scores, samples.ended, config.score.no_eos_penalty, self.score_moments, config.score.clip,
            runtime.gather,
        )  # fmt: skip
        spec = config.advantage_spec(self.kl_controller.value)
        experience = build_experience(
            samples, logprobs, ref_logprobs, values, raw_scores, scores, spec, runtime.gather, runtime.process_index,
            frozen_states,
        )  # fmt: skip
        return experience, responses

    # -- one iteration -------------------------------------------------------------------------

    def train_step(self) -> StepOutput:
        """One PPO iteration (steps 1-6); returns its metrics and what was sampled (this process's share)."""
        started = time.perf_counter()
        records = self.prompt_batch(self.step)
        experience, responses, timings = self.rollout(records)
        rolled = time.perf_counter()
        phase("update", 3, 3)
        update_stats = self.update(experience)  # step 5 (`rlhfkit.training.ppo.PPOUpdate`)
        finished = time.perf_counter()
        rollout_stats = rollout_metrics(experience, self.runtime.gather)
        new_tokens = rollout_stats.pop("response/tokens")
        metrics = {
            **rollout_stats,
            "kl/coef": self.kl_controller.value,
            "kl/in_loss": float(self.update.kl_in_loss is not None),
            "algorithm/group_size": self.config.algorithm.responses_per_prompt,
            **update_stats,
            "time/rollout_s": rolled - started,
            **timings,
            "time/update_s": finished - rolled,
            "time/step_s": finished - started,
            "throughput/tokens_per_s": new_tokens / (finished - started),
            "train/learning_rate": self.scheduler.get_last_lr()[0],
        }
        if self.config.ppo.objective == "kl_penalty":
            metrics["policy/penalty_beta"] = self.update.penalty_beta
        self.kl_controller.update(rollout_stats["kl/mean"], self.config.responses_per_iteration)
        self.step += 1
        samples = Samples([prompt_text(r) for r in records], responses, experience.raw_scores.tolist())
        return {key: float(value) for key, value in metrics.items()}, samples

    def evaluate(self) -> StepOutput:
        """The reward-hacking monitor's held-out evaluation (monitor.*; nothing when it is off)."""
        return self.watch.evaluate(self), None

    # -- what fit saves --------------------------------------------------------------------------

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        tensors, state = training_state(self.unwrapped, self.optimizer, self.scheduler)
        state |= {"kl_controller": self.kl_controller.state_dict(), "penalty_beta": self.update.penalty_beta}
        if self.score_moments is not None:
            state["score_moments"] = self.score_moments.state_dict()
        self.watch.save_into(tensors, state)
        return tensors, state

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        load_training_state(tensors, state, self.unwrapped, self.optimizer, self.scheduler)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.update.penalty_beta = state["penalty_beta"]
        if self.score_moments is not None:
            self.score_moments.load_state_dict(state["score_moments"])
        self.watch.load_from(tensors, state)

    def save_final(self, directory: Path) -> None:
        """`final/`: the policy as a plain model directory (LoRA merged, its adapter in adapter/), tokenizer, critic."""
        model = self.unwrapped
        self.watch.roll_back(model)  # monitor.action=rollback on a stopped run: the best gold evaluation's weights
        save_policy(model.policy, self.tokenizer, directory, self.runtime.precision)
        if model.critic is not None:
            critic = {name: tensor.detach().contiguous().cpu() for name, tensor in model.critic.state_dict().items()}
            save_file(critic, str(directory / "critic.safetensors"))

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        history = [h for h in history if "reward/score_mean" in h]  # not step 0's monitor evaluation
        scores = [h["reward/score_mean"] for h in history]
        return {
            "advantage": self.config.algorithm.advantage,
            "score_first": scores[0],
            "score_last": scores[-1],
            "score_last5_mean": sum(scores[-5:]) / len(scores[-5:]),
            "kl_last": history[-1]["kl/mean"],
            "seconds_per_step": sum(h["time/step_s"] for h in history) / len(history),
            **self.watch.summary(out),
        }

    def train(self, out: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
        """The Python API: the whole run into `out` (default: config.out); returns summary.json's figures."""
        return fit(self, RunDirectory.resolve(str(out or self.config.out), self.command, resume))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PPOConfig)


def run(args: argparse.Namespace) -> Path:
    return train_command(run_config(PPOConfig, args), "ppo", args.resume)  # with --resume, the run's config.yaml


def train_command(config: PPOConfig, command: str, resume: bool) -> Path:
    """What `rlhfkit ppo` (and `grpo`, `rloo`) do with their configuration: train, say where the policy is, and
    return the run directory (for --push-to-hub)."""
    run_directory = RunDirectory.resolve(config.out, command, resume)  # before any model loads
    summary = fit(PPOTrainer(config, command=command), run_directory)
    if summary:
        print(
            f"rlhfkit {command}: score {summary['score_first']:.3f} -> {summary['score_last']:.3f}, "
            f"KL {summary['kl_last']:.2f}, {summary['seconds_per_step']:.1f} s/step; policy in {summary['final']}"
        )
    return run_directory.path
