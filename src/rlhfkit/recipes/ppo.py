"""`rlhfkit ppo`: PPO against a reward source with a KL leash to a frozen reference.

One iteration, as in Ziegler et al. 2019 / Stiennon et al. 2020 / InstructGPT:

    1 generate   sample one response per prompt (left-padded prompts, temperature, top-k/top-p, stop at EOS)
    2 score      reward source -> one score per response; reference log-probs
    3 reward     per-token -β·KL plus the score on the last real token
    4 advantage  GAE(γ, λ) on the rollout-time values, whitened over the batch
    5 update     K epochs of shuffled minibatches: clipped surrogate (or the PPO paper's
                 adaptive-KL surrogate), clipped value loss, entropy bonus, PPO-ptx
    6 log        metrics, samples, checkpoint; adapt β

Where this departs from a naive implementation, and why:
- Step 1 keeps the log-probs and last hidden states that sampling already computed, so the
  policy is not run a second time to score its own samples (the old log-probs are exactly
  the distribution that was sampled from; under bf16 they differ from a fresh forward by
  ~1e-4). Only the reference (and a separate critic, if any) run in step 2.
- The loss of a minibatch is a sum over its tokens divided by the minibatch's token count
  across all micro-batches and processes, so gradient accumulation and `accelerate launch`
  with N processes give the same update as one process with the whole minibatch.
- Precision: fp32 by default; `model.dtype=bfloat16` runs full-sequence passes under bf16
  autocast over fp32 weights (for GPUs: on the 2-core CPU we measured, autocast made training
  25x slower). Log-probs, advantages and losses are fp32 either way.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from rlhfkit.algorithms import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    RunningMeanStd,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    kl_penalty_policy_loss,
    masked_mean,
    update_kl_penalty_beta,
)
from rlhfkit.assets import PROMPTS
from rlhfkit.checkpoint import write_directory_atomic
from rlhfkit.config import (
    GenerationConfig,
    ModelConfig,
    RewardConfig,
    add_config_arguments,
    config_from_args,
    field,
    save_config,
)
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.data.records import demonstration_response
from rlhfkit.errors import UserError
from rlhfkit.models import ScalarHeadModel, ValueHead, load_backbone, load_causal_lm, load_tokenizer
from rlhfkit.models.actor_critic import ActorCritic, response_logprobs
from rlhfkit.models.lora import apply_lora
from rlhfkit.rewards import RewardFn, build_reward, checked_scores, validate_records_for_reward
from rlhfkit.rollout.experience import build_experience, sequence_kl, shape_scores
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.tracking import Tracker, plot_metrics, read_jsonl, write_json_atomic
from rlhfkit.training import (
    OptimConfig,
    batch_indices,
    build_optimizer,
    optimizer_step,
    resolve_out_dir,
    response_token_nll,
    restore_training_state,
    save_training_state,
)

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class PPODataConfig:
    prompts: str = field(str(PROMPTS), "prompts file (JSONL/JSON/CSV/Parquet) or datasets id")
    ptx: str = field(
        "", "demonstrations mixed into the update with coefficient ppo.ptx_coef (PPO-ptx, InstructGPT); empty: off"
    )
    max_prompt_length: int = field(256, "prompts longer than this many tokens are cut from the left")


@dataclasses.dataclass
class PPOTrainConfig:
    steps: int = field(20, "PPO iterations")
    batch_size: int = field(16, "prompts per iteration (all processes together)")
    ppo_epochs: int = field(4, "passes over each batch")
    mini_batch_size: int = field(4, "responses per optimiser step")
    micro_batch_size: int = field(
        0, "responses per forward pass; gradients accumulate up to mini_batch_size (0: = mini_batch_size)"
    )
    checkpoint_every: int = field(10, "save a checkpoint every N iterations (0: only at the end)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ppo_epochs", "mini_batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.mini_batch_size:
            raise UserError(
                f"train.batch_size {self.batch_size} is not divisible by train.mini_batch_size {self.mini_batch_size}"
            )
        if self.micro_batch_size and self.mini_batch_size % self.micro_batch_size:
            raise UserError(
                f"train.mini_batch_size {self.mini_batch_size} is not divisible by train.micro_batch_size {self.micro_batch_size}"
            )


@dataclasses.dataclass
class PPOAlgorithmConfig:
    objective: str = field("clip", "clip (clipped surrogate) or kl_penalty (the PPO paper's adaptive-KL surrogate)")
    clip_range: float = field(0.2, "ε of the clipped surrogate")
    value_clip_range: float = field(0.2, "clip of the value update around the rollout-time values (0: unclipped)")
    value_coef: float = field(0.1, "weight of the value loss")
    entropy_coef: float = field(0.0, "weight of the entropy bonus")
    gamma: float = field(1.0, "discount over response tokens")
    lam: float = field(0.95, "GAE λ")
    target_kl: float = field(
        0.0, "stop this iteration's epochs once a minibatch's approx-KL(old‖new) exceeds it (0: never)"
    )
    penalty_beta: float = field(1.0, "initial β of the kl_penalty objective")
    penalty_target: float = field(0.01, "d_targ of the kl_penalty objective's β update")
    ptx_coef: float = field(0.0, "γ of PPO-ptx: weight of the SFT loss on data.ptx")

    def __post_init__(self) -> None:
        if self.objective not in ("clip", "kl_penalty"):
            raise UserError(f"ppo.objective must be clip or kl_penalty, got {self.objective!r}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise UserError(f"ppo.gamma must be in (0, 1] and ppo.lam in [0, 1], got {self.gamma} and {self.lam}")


@dataclasses.dataclass
class KLConfig:
    coef: float = field(0.05, "β of the per-token -β·KL reward (initial value if adaptive)")
    estimator: str = field("k1", "per-token KL estimator in the reward: k1 (log-ratio), k2 or k3")
    adaptive: bool = field(False, "adapt β to keep the KL near kl.target (Ziegler et al. 2019)")
    target: float = field(6.0, "target per-response KL for the adaptive controller")
    horizon: int = field(10000, "horizon (in responses) of the adaptive controller")

    def __post_init__(self) -> None:
        if self.estimator not in KL_ESTIMATORS:
            raise UserError(f"kl.estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.estimator!r}")


@dataclasses.dataclass
class ScoreConfig:
    normalize: bool = field(False, "normalise scores by their running mean and std")
    clip: float = field(0.0, "clip (normalised) scores to ±clip (0: off)")
    no_eos_penalty: float = field(0.0, "subtracted from the score of a response that did not end with EOS")


@dataclasses.dataclass
class CriticConfig:
    kind: str = field("shared", "shared (a value head on the policy) or separate (its own transformer)")
    model: str = field(
        "",
        "for a separate critic: the model to start from (default: the reward model if reward.kind=model, else model.name)",
    )

    def __post_init__(self) -> None:
        if self.kind not in ("shared", "separate"):
            raise UserError(f"critic.kind must be shared or separate, got {self.kind!r}")


@dataclasses.dataclass
class PPOConfig:
    model: ModelConfig = field(factory=ModelConfig, doc="policy (and reference) model")
    data: PPODataConfig = field(factory=PPODataConfig, doc="data")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling")
    reward: RewardConfig = field(factory=RewardConfig, doc="reward source")
    score: ScoreConfig = field(factory=ScoreConfig, doc="score shaping")
    kl: KLConfig = field(factory=KLConfig, doc="KL penalty in the reward")
    ppo: PPOAlgorithmConfig = field(factory=PPOAlgorithmConfig, doc="PPO update")
    critic: CriticConfig = field(factory=CriticConfig, doc="critic")
    train: PPOTrainConfig = field(factory=PPOTrainConfig, doc="schedule")
    optim: OptimConfig = field(
        factory=OptimConfig, doc="optimiser (the schedule runs over all optimiser steps of the run)"
    )
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/ppo-<time>)")

    def __post_init__(self) -> None:
        if self.ppo.ptx_coef > 0 and not self.data.ptx:
            raise UserError("ppo.ptx_coef > 0 needs data.ptx=<demonstrations file>")

    @property
    def micro_batch_size(self) -> int:
        return self.train.micro_batch_size or self.train.mini_batch_size

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps over the whole run (for the learning-rate schedule)."""
        return self.train.steps * self.train.ppo_epochs * (self.train.batch_size // self.train.mini_batch_size)


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------


class PPOTrainer:
    """PPO for a causal LM against any reward callable `(prompts, responses, records) -> scores`.

    >>> trainer = PPOTrainer(PPOConfig(), reward=my_reward, prompts=[{"prompt": "Hi"}, ...])
    >>> summary = trainer.train()
    """

    def __init__(self, config: PPOConfig, reward: RewardFn | None = None, prompts: list[dict[str, Any]] | None = None):
        self.config = config
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.prompts = prompts if prompts is not None else load_records(config.data.prompts, "prompts")
        if not self.prompts:
            raise UserError(f"{config.data.prompts}: holds no prompts")
        if config.train.batch_size % self.accelerator.num_processes:
            raise UserError(
                f"train.batch_size {config.train.batch_size} is not divisible by the {self.accelerator.num_processes} processes"
            )
        if reward is None:
            validate_records_for_reward(config.reward, self.prompts, config.data.prompts)
        self.ptx_records = load_records(config.data.ptx, "demonstrations") if config.data.ptx else []
        self.reward = reward if reward is not None else build_reward(config.reward, config.model.dtype)
        self._build_models()
        self.kl_controller = (
            AdaptiveKLController(config.kl.coef, config.kl.target, config.kl.horizon)
            if config.kl.adaptive
            else FixedKLController(config.kl.coef)
        )
        self.penalty_beta = config.ppo.penalty_beta

        self.score_moments = RunningMeanStd() if config.score.normalize else None
        self.step = 0

    # -- set-up ---------------------------------------------------------------

    def _build_models(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        self.tokenizer = load_tokenizer(config.model.name)
        policy = load_causal_lm(config.model.name, self.tokenizer)
        if config.model.lora.enabled:
            policy = apply_lora(policy, config.model.lora)
            self.reference = None  # the policy with its adapter disabled
        else:
            self.reference = load_causal_lm(config.model.name, self.tokenizer).eval().requires_grad_(False)
        if config.critic.kind == "shared":
            critic = ValueHead(policy.config.hidden_size)
        else:
            source = config.critic.model or (config.reward.model if config.reward.kind == "model" else "")
            if source and Path(source, "reward.json").is_file():
                critic = ScalarHeadModel.load(source)  # Ziegler et al.: the value function starts as the reward model
            else:
                critic = ScalarHeadModel(load_backbone(source or config.model.name, self.tokenizer))
        actor_critic = ActorCritic(policy, critic)
        optimizer, self.scheduler = build_optimizer(actor_critic.parameters(), config.optim, config.optimizer_steps)
        self.actor_critic, self.optimizer = self.accelerator.prepare(actor_critic, optimizer)
        if self.reference is not None:
            self.reference = self.reference.to(self.accelerator.device)

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.actor_critic)

    # -- one iteration -----------------------------------------------------------

    def prompt_batch(self, step: int) -> list[dict[str, Any]]:
        """This process's share of iteration `step`'s prompts (epoch-wise permutations, seeded)."""

        indices = batch_indices(len(self.prompts), self.config.train.batch_size, step, self.config.seed)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        return [self.prompts[i] for i in indices[rank::world]]

    def rollout(self, records: list[dict[str, Any]]):
        """Steps 1-4: generate, score, shape rewards, advantages. Returns (experience, responses, timings)."""
        started = time.perf_counter()
        samples = self.generate(records)
        generated = time.perf_counter()
        experience, responses = self.score(samples, records)
        timings = {"time/generate_s": generated - started, "time/score_s": time.perf_counter() - generated}
        return experience, responses, timings

    def generate(self, records: list[dict[str, Any]]):
        """Step 1: one sampled response per prompt record."""

        model = self.unwrapped
        texts = [self._truncated_prompt(format_prompt(self.tokenizer, r)) for r in records]
        model.eval()
        # with a value head, the sampling pass's log-probs and hidden states save a forward (when it ran in model.dtype)
        return sample(
            model.policy,
            self.tokenizer,
            texts,
            self.config.generation,
            self.config.model.dtype,
            keep_scores=model.shares_trunk,
        )

    def score(self, samples, records: list[dict[str, Any]]):
        """Steps 2-4 on sampled responses: scores, reference log-probs, shaped rewards, advantages."""

        config, model = self.config, self.unwrapped
        responses = decode_responses(self.tokenizer, samples)
        raw_scores = checked_scores(self.reward, [prompt_text(r) for r in records], responses, records)
        ids, mask, response_ids = samples.input_ids, samples.attention_mask, samples.response_ids
        temperature, dtype = config.generation.temperature, config.model.dtype
        with torch.no_grad():
            if self.reference is None:
                with model.reference_context():
                    ref_logprobs, frozen_states = response_logprobs(
                        model.policy, ids, mask, response_ids, temperature, dtype, model.frozen_layers
                    )
            else:
                ref_logprobs, frozen_states = response_logprobs(
                    self.reference, ids, mask, response_ids, temperature, dtype
                )
            if samples.logprobs is not None:
                logprobs, values = samples.logprobs, model.critic(samples.hidden)
            else:  # a separate critic, or sampling ran in another precision than model.dtype: the policy's own pass
                logprobs, _, values = model(ids, mask, response_ids, temperature, dtype, frozen_states=frozen_states)
        logprobs, ref_logprobs = (
            logprobs.masked_fill(~samples.response_mask, 0.0),
            ref_logprobs.masked_fill(~samples.response_mask, 0.0),
        )
        scores = shape_scores(
            raw_scores, samples.ended, config.score.no_eos_penalty, self.score_moments, config.score.clip
        )
        experience = build_experience(
            samples, logprobs, ref_logprobs, values, raw_scores, scores, self.kl_controller.value,
            KL_ESTIMATORS[config.kl.estimator], config.ppo.gamma, config.ppo.lam, gather=self._gather, frozen_states=frozen_states,
        )  # fmt: skip
        return experience, responses

    def _truncated_prompt(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        limit = self.config.data.max_prompt_length
        return text if len(ids) <= limit else self.tokenizer.decode(ids[-limit:])

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.gather(self.accelerator.pad_across_processes(tensor, dim=1))

    def _global_sum(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value, "sum") if self.accelerator.num_processes > 1 else value

    def update(self, experience) -> dict[str, float]:
        """Step 5: K epochs of shuffled minibatches. Returns the means of the minibatch statistics."""
        config = self.config
        world = self.accelerator.num_processes
        local_mini = config.train.mini_batch_size // world
        local_micro = min(config.micro_batch_size, local_mini)
        batch = experience.samples.response_ids.shape[0]
        stats: dict[str, list[float]] = {}
        self.actor_critic.train()
        stopped_early = False
        for _ in range(config.train.ppo_epochs):
            order = torch.randperm(batch)
            for start in range(0, batch, local_mini):
                mini = experience.select(order[start : start + local_mini])
                tokens = self._global_sum(mini.samples.response_mask.sum().float())
                mini_stats = self._minibatch_step(mini, local_micro, tokens.clamp(min=1.0) / world)
                for key, value in mini_stats.items():
                    stats.setdefault(key, []).append(value)
                if config.ppo.target_kl and mini_stats["policy/approx_kl"] > config.ppo.target_kl:
                    stopped_early = True
                    break
            if stopped_early:
                break
        if config.ppo.objective == "kl_penalty":
            self.penalty_beta = update_kl_penalty_beta(
                self.penalty_beta,
                sum(stats["policy/approx_kl"]) / len(stats["policy/approx_kl"]),
                config.ppo.penalty_target,
            )
        summary = {key: sum(values) / len(values) for key, values in stats.items()}
        summary["policy/early_stop"] = float(stopped_early)
        return summary

    def _minibatch_step(self, mini, micro_size: int, token_normaliser: torch.Tensor) -> dict[str, float]:
        """One optimiser step over a minibatch, accumulating gradients over micro-batches.

        Each micro-batch's masked means are re-weighted by its share of the minibatch's tokens
        (`token_normaliser` = tokens in the global minibatch / processes, since DDP averages
        gradients over processes), so the step equals one over the whole minibatch at once.
        """

        config = self.config
        totals: dict[str, float] = {}
        rows = mini.samples.response_ids.shape[0]
        for start in range(0, rows, micro_size):
            micro = mini.select(torch.arange(start, min(start + micro_size, rows)))
            mask = micro.samples.response_mask
            weight = mask.sum() / token_normaliser
            logprobs, entropy, values = self.actor_critic(
                micro.samples.input_ids,
                micro.samples.attention_mask,
                micro.samples.response_ids,
                config.generation.temperature,
                config.model.dtype,
                entropy_grad=config.ppo.entropy_coef != 0,
                frozen_states=micro.frozen_states,
            )
            if config.ppo.objective == "clip":
                pg_loss, pg_stats = clipped_policy_loss(
                    logprobs, micro.logprobs, micro.advantages, mask, config.ppo.clip_range
                )
            else:
                pg_loss, pg_stats = kl_penalty_policy_loss(
                    logprobs, micro.logprobs, micro.advantages, mask, self.penalty_beta
                )
            vf_loss, vf_stats = clipped_value_loss(
                values, micro.values, micro.returns, mask, config.ppo.value_clip_range
            )
            entropy_mean = masked_mean(entropy, mask)
            loss = pg_loss + config.ppo.value_coef * vf_loss - config.ppo.entropy_coef * entropy_mean
            self.accelerator.backward(loss * weight)
            for key, value in {
                "policy/loss": pg_loss, "policy/clipfrac": pg_stats["clipfrac"], "policy/approx_kl": pg_stats["approx_kl"],
                "policy/entropy": entropy_mean, "value/loss": vf_loss, "value/clipfrac": vf_stats["clipfrac"],
            }.items():  # fmt: skip
                totals[key] = (
                    totals.get(key, 0.0) + float(value.detach()) * float(weight) * self.accelerator.num_processes
                )
        if config.ppo.ptx_coef > 0:
            totals["ptx/loss"] = self._ptx_backward()
        totals["train/grad_norm"] = optimizer_step(
            list(self.actor_critic.parameters()), self.optimizer, self.scheduler, config.optim.max_grad_norm
        )
        return totals

    def _ptx_backward(self) -> float:
        """PPO-ptx (InstructGPT eq. 2): γ · SFT loss on a minibatch of demonstrations, added to the gradient."""

        config = self.config
        picks = torch.randint(len(self.ptx_records), (config.micro_batch_size,)).tolist()
        items = [
            tokenize_prompt_response(
                self.tokenizer,
                self.ptx_records[i],
                demonstration_response(self.ptx_records[i]),
                config.data.max_prompt_length + config.generation.max_new_tokens,
            )
            for i in picks
        ]
        ids, mask, response_mask = pad_batch(items, self.tokenizer.pad_token_id)

        loss = response_token_nll(self.unwrapped.policy, ids, mask, response_mask, config.model.dtype)
        self.accelerator.backward(config.ppo.ptx_coef * loss)
        return float(loss.detach())

    def train_step(self) -> tuple[dict[str, float], list[dict[str, Any]], list[str], torch.Tensor]:
        """One PPO iteration (steps 1-5); returns metrics and what was sampled."""

        started = time.perf_counter()
        records = self.prompt_batch(self.step)
        experience, responses, timings = self.rollout(records)
        rolled = time.perf_counter()
        update_stats = self.update(experience)
        finished = time.perf_counter()
        mask = experience.samples.response_mask
        gathered = {
            "score": self._gather(experience.raw_scores.unsqueeze(1)).squeeze(1),
            "kl": self._gather(sequence_kl(experience.logprobs, experience.ref_logprobs, mask).unsqueeze(1)).squeeze(1),
            "total": self._gather((experience.rewards * mask).sum(-1, keepdim=True)).squeeze(1),
            "length": self._gather(mask.sum(-1, keepdim=True).float()).squeeze(1),
            "ended": self._gather(experience.samples.ended.float().unsqueeze(1)).squeeze(1),
        }
        ev = explained_variance(self._gather(experience.values), self._gather(experience.returns), self._gather(mask))
        new_tokens = float(gathered["length"].sum())
        step_seconds = finished - started
        metrics = {
            "reward/score_mean": gathered["score"].mean(),
            "reward/score_std": gathered["score"].std() if gathered["score"].numel() > 1 else torch.tensor(0.0),
            "reward/total_mean": gathered["total"].mean(),
            "kl/mean": gathered["kl"].mean(),
            "kl/coef": self.kl_controller.value,
            **update_stats,
            "value/explained_variance": ev,
            "response/length_mean": gathered["length"].mean(),
            "response/eos_fraction": gathered["ended"].mean(),
            "time/rollout_s": rolled - started,
            **timings,
            "time/update_s": finished - rolled,
            "time/step_s": step_seconds,
            "throughput/tokens_per_s": new_tokens / step_seconds,
            "train/learning_rate": self.scheduler.get_last_lr()[0],
        }
        if self.config.ppo.objective == "kl_penalty":
            metrics["policy/penalty_beta"] = self.penalty_beta
        self.kl_controller.update(float(gathered["kl"].mean()), self.config.train.batch_size)
        self.step += 1
        return {k: float(v) for k, v in metrics.items()}, records, responses, experience.raw_scores

    # -- checkpoints -----------------------------------------------------------

    def save_checkpoint(self, out_dir: Path) -> None:
        if not self.accelerator.is_main_process:
            return
        extra = {"kl_controller": self.kl_controller.state_dict(), "penalty_beta": self.penalty_beta}
        if self.score_moments is not None:
            extra["score_moments"] = self.score_moments.state_dict()
        save_training_state(out_dir, self.step, self.unwrapped, self.optimizer, self.scheduler, extra)

    def load_checkpoint(self, path: Path) -> None:
        state = restore_training_state(path, self.unwrapped, self.optimizer, self.scheduler)
        extra = state["extra"]
        self.kl_controller.load_state_dict(extra["kl_controller"])
        self.penalty_beta = extra["penalty_beta"]
        if self.score_moments is not None:
            self.score_moments.load_state_dict(extra["score_moments"])
        self.step = state["step"]

    def save_final(self, directory: Path) -> None:
        """`final/`: the policy as a plain model directory (LoRA merged) + tokenizer, and the critic."""

        model = self.unwrapped
        policy = model.policy
        if hasattr(policy, "merge_and_unload"):
            policy = copy.deepcopy(policy).merge_and_unload()
        policy.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        save_file(
            {k: v.detach().contiguous() for k, v in model.critic.state_dict().items()},
            str(directory / "critic.safetensors"),
        )

    # -- the whole run -----------------------------------------------------------

    def train(self, out_dir: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
        config = self.config
        out, checkpoint = resolve_out_dir(str(out_dir or config.out), "ppo", resume)
        main = self.accelerator.is_main_process
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        if main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(config, out / "config.yaml")
        tracker = Tracker(out, config.train.steps, "ppo", start_step=self.step, tensorboard=main) if main else None
        started = time.time()
        first: dict[str, float] | None = None
        metrics: dict[str, float] = {}
        try:
            while self.step < config.train.steps:
                metrics, records, responses, scores = self.train_step()
                first = first or metrics
                if tracker is not None:
                    tracker.log(self.step, metrics)
                    tracker.log_samples(self.step, [prompt_text(r) for r in records], responses, scores.tolist())
                every = config.train.checkpoint_every
                if (every and self.step % every == 0) or self.step == config.train.steps:
                    self.save_checkpoint(out)
        finally:
            if tracker is not None:
                tracker.close()
        summary: dict[str, Any] = {}
        if main:
            final = write_directory_atomic(out / "final", self.save_final)
            plot_metrics(
                out / "metrics.jsonl",
                ["reward/score_mean", "kl/mean", "policy/clipfrac", "value/explained_variance"],
                out / "training.png",
                "rlhfkit ppo",
            )

            history = read_jsonl(out / "metrics.jsonl")
            summary = {
                "steps": self.step,
                "score_first": history[0]["reward/score_mean"],
                "score_last": history[-1]["reward/score_mean"],
                "score_last5_mean": sum(h["reward/score_mean"] for h in history[-5:]) / len(history[-5:]),
                "kl_last": history[-1]["kl/mean"],
                "seconds_per_step": sum(h["time/step_s"] for h in history) / len(history),
                "wall_s": time.time() - started,
                "final": str(final),
            }
            write_json_atomic(out / "summary.json", summary)
        self.accelerator.wait_for_everyone()
        return summary


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PPOConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(PPOConfig, args)
    out, _ = resolve_out_dir(config.out, "ppo", args.resume)  # refuse to overwrite an earlier run before any heavy work
    trainer = PPOTrainer(config)  # loads and validates data, reward source and models before any output
    summary = trainer.train(out, resume=args.resume)
    if summary:
        print(
            f"rlhfkit ppo: score {summary['score_first']:.3f} -> {summary['score_last']:.3f}, "
            f"KL {summary['kl_last']:.2f}, {summary['seconds_per_step']:.1f} s/step; policy in {summary['final']}"
        )
    return 0
