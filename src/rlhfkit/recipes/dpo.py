"""`rlhfkit dpo`: direct preference optimisation (Rafailov et al. 2023) and two variants.

    1 load       comparisons (prompt, chosen, rejected); hold out an eval split
    2 reference  log π_ref(y_w | x) and log π_ref(y_l | x) for every pair, computed ONCE before
                 training and cached in the output directory (reference_logprobs.safetensors)
    3 train      AdamW on the loss picked once by train.loss:
                   dpo           -log σ(β h)                       h = (log π(y_w) - log π_ref(y_w))
                   ipo           (h - 1/(2β))²  (Azar et al. 2023)        - (log π(y_l) - log π_ref(y_l))
                   conservative  DPO with labels flipped w.p. train.label_smoothing (Mitchell 2023)
    4 evaluate   held-out loss, implicit-reward accuracy and margin; KL to the reference on held-out
                 prompts: sample y ~ π(·|x), measure Σ_t log π(y_t) - log π_ref(y_t) per response
    5 save       checkpoints for --resume; final/ = a plain HF model directory (LoRA merged)

Where this departs from a naive implementation, and why:
- The reference is never run during training: its log-probs of the fixed pairs do not change,
  so one pass over the data set replaces one reference forward per step. With LoRA the
  reference is the base with the adapter disabled (one copy of weights); with full fine-tuning
  the reference is a frozen copy kept only for the held-out KL measurement.
- Chosen and rejected responses go through the policy in one padded batch (one forward).
- The KL estimate is the plain Monte-Carlo k1 estimator of KL(π‖π_ref) at temperature 1;
  with generation.temperature ≠ 1 it measures the divergence of the tempered sampler.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rlhfkit.algorithms import conservative_dpo_loss, dpo_loss, ipo_loss
from rlhfkit.assets import EVAL_PROMPTS
from rlhfkit.checkpoint import write_directory_atomic
from rlhfkit.config import GenerationConfig, ModelConfig, RewardConfig, add_config_arguments, field, save_config
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.lora import apply_lora, is_lora
from rlhfkit.rewards import build_reward, checked_scores
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.tracking import Tracker, plot_metrics, read_jsonl, write_json_atomic
from rlhfkit.training import (
    OptimConfig,
    batch_indices,
    build_optimizer,
    optimizer_step,
    resolve_out_dir,
    restore_training_state,
    run_config,
    save_training_state,
    sequence_logprobs,
)

LOSSES = ("dpo", "ipo", "conservative")
REFERENCE_FILE = "reference_logprobs.safetensors"

# (policy_chosen, policy_rejected, ref_chosen, ref_rejected) (N,) each -> (losses, chosen_rewards, rejected_rewards)
PreferenceLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


@dataclasses.dataclass
class DPODataConfig:
    train: str = field("", "comparisons: prompt + chosen + rejected (e.g. from `rlhfkit label`)")
    eval: str = field("", "held-out comparisons (empty: hold out data.eval_fraction of data.train)")
    eval_fraction: float = field(0.1, "share of data.train held out when data.eval is empty")
    prompts: str = field(
        str(EVAL_PROMPTS), "held-out prompts: the policy's answers to them measure the KL to the reference"
    )
    max_length: int = field(256, "tokens per prompt + response; the prompt is cut from the left first")

    def __post_init__(self) -> None:
        if not 0 < self.eval_fraction < 1:
            raise UserError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.max_length < 2:
            raise UserError(f"data.max_length must be at least 2, got {self.max_length}")


@dataclasses.dataclass
class DPOTrainConfig:
    steps: int = field(100, "optimiser steps")
    batch_size: int = field(8, "comparison pairs per optimiser step")
    micro_batch_size: int = field(0, "pairs per forward pass; gradients accumulate up to batch_size (0: = batch_size)")
    loss: str = field("dpo", "dpo, ipo or conservative (label-smoothed DPO)")
    beta: float = field(0.1, "β: strength of the pull to the reference (IPO's τ)")
    label_smoothing: float = field(0.1, "for loss=conservative: probability that a label is flipped, in [0, 0.5)")
    eval_every: int = field(25, "evaluate every N steps (and at the end)")
    kl_prompts: int = field(16, "held-out prompts answered at each evaluation to measure KL (0: none)")
    score_answers: bool = field(
        False, "also score the held-out answers with reward.* (a gold measure, never trained on)"
    )
    reference_batch_size: int = field(16, "pairs per forward pass when caching the reference log-probs")
    checkpoint_every: int = field(50, "save a checkpoint every N steps (and at the end)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "reference_batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size < 0 or self.batch_size % (self.micro_batch_size or self.batch_size):
            raise UserError(
                f"train.batch_size {self.batch_size} is not divisible by train.micro_batch_size {self.micro_batch_size}"
            )
        if self.loss not in LOSSES:
            raise UserError(f"train.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.beta <= 0:
            raise UserError(f"train.beta must be positive, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise UserError(f"train.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.kl_prompts < 0:
            raise UserError(f"train.kl_prompts must be >= 0, got {self.kl_prompts}")


@dataclasses.dataclass
class DPOConfig:
    model: ModelConfig = field(factory=ModelConfig, doc="the policy, which is also the reference")
    data: DPODataConfig = field(factory=DPODataConfig, doc="data")
    train: DPOTrainConfig = field(factory=DPOTrainConfig, doc="loss and schedule")
    optim: OptimConfig = field(factory=lambda: OptimConfig(learning_rate=5e-6), doc="optimiser")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling of the held-out answers")
    reward: RewardConfig = field(factory=RewardConfig, doc="gold scorer of held-out answers, with train.score_answers")
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/dpo-<time>)")

    @property
    def micro_batch_size(self) -> int:
        return self.train.micro_batch_size or self.train.batch_size


def preference_loss(config: DPOTrainConfig) -> PreferenceLoss:
    """The loss function that train.loss names, with its coefficients bound."""
    if config.loss == "dpo":
        return functools.partial(dpo_loss, beta=config.beta)
    if config.loss == "ipo":
        return functools.partial(ipo_loss, tau=config.beta)
    return functools.partial(conservative_dpo_loss, beta=config.beta, label_smoothing=config.label_smoothing)


# ---------------------------------------------------------------------------
# Pairs and their log-probabilities
# ---------------------------------------------------------------------------


def tokenize_pairs(
    tokenizer: Any, records: list[dict[str, Any]], max_length: int
) -> tuple[list[tuple[dict, dict]], int]:
    """(chosen item, rejected item) per comparison, each prompt + response + EOS; and how many responses were cut."""

    pairs = [
        (
            tokenize_prompt_response(tokenizer, r, r["chosen"], max_length),
            tokenize_prompt_response(tokenizer, r, r["rejected"], max_length),
        )
        for r in records
    ]
    return pairs, sum(chosen["truncated"] + rejected["truncated"] for chosen, rejected in pairs)


def pair_logprobs(
    model: torch.nn.Module, pairs: list[tuple[dict, dict]], pad_token_id: int, dtype: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (N,), (N,) of the chosen and rejected responses, in one forward of 2N rows."""

    items = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    logprobs = sequence_logprobs(model, *pad_batch(items, pad_token_id), dtype=dtype)  # (2N,)
    return logprobs[: len(pairs)], logprobs[len(pairs) :]


def reference_mode(model: Any) -> contextlib.AbstractContextManager:
    """Where `model` is the reference: with LoRA, the base with the adapter disabled; else the model as it is."""

    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


@torch.no_grad()
def reference_logprobs(
    model: torch.nn.Module, pairs: list[tuple[dict, dict]], pad_token_id: int, batch_size: int, dtype: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π_ref of every pair's chosen and rejected response, (N,) each; with LoRA, under the base (adapter off)."""
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        with reference_mode(model):
            c, r = pair_logprobs(model, pairs[start : start + batch_size], pad_token_id, dtype)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def pair_metrics(
    prefix: str, losses: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, float]:
    """Mean loss, implicit-reward accuracy (r_w > r_l), margin and the rewards themselves."""
    return {
        f"{prefix}/loss": losses.mean().item(),
        f"{prefix}/reward_accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
        f"{prefix}/reward_margin": (chosen_rewards - rejected_rewards).mean().item(),
        f"{prefix}/reward_chosen": chosen_rewards.mean().item(),
        f"{prefix}/reward_rejected": rejected_rewards.mean().item(),
    }


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


class DPORun:
    """DPO, validated at construction (before any output), trained by `train()`."""

    def __init__(self, config: DPOConfig, resume: bool = False):
        self.config = config
        data = config.data
        # 1. load and validate all input before any output exists
        if not data.train:
            raise UserError(
                "data.train is required: a file of comparisons (prompt, chosen, rejected), e.g. from `rlhfkit label`"
            )
        self.out, self.checkpoint = resolve_out_dir(config.out, "dpo", resume)
        train_records = load_records(data.train, "comparisons")
        if data.eval:
            eval_records = load_records(data.eval, "comparisons")
        else:
            held_out = max(1, round(len(train_records) * data.eval_fraction))
            if len(train_records) - held_out < 1:
                raise UserError(
                    f"{data.train}: {len(train_records)} comparison(s) are too few to hold out an eval split; give data.eval or more records"
                )
            train_records, eval_records = train_records[:-held_out], train_records[-held_out:]
        soft = sum(0 < r.get("label", 1) < 1 for r in train_records)
        if soft:
            print(
                f"rlhfkit dpo: warning: {soft} comparison(s) carry a soft 'label' (e.g. from --judge ai); DPO uses only which response is chosen"
            )
        self.kl_prompts = (
            load_records(data.prompts, "prompts")[: config.train.kl_prompts] if config.train.kl_prompts else []
        )
        self.gold = build_reward(config.reward, config.model.dtype) if config.train.score_answers else None

        self.tokenizer = load_tokenizer(config.model.name)
        self.train_pairs, truncated = tokenize_pairs(self.tokenizer, train_records, data.max_length)
        self.eval_pairs, eval_truncated = tokenize_pairs(self.tokenizer, eval_records, data.max_length)
        if truncated + eval_truncated:
            print(
                f"rlhfkit dpo: warning: {truncated + eval_truncated} response(s) longer than data.max_length={data.max_length} were cut at their end"
            )

        torch.manual_seed(config.seed)
        model = load_causal_lm(config.model.name, self.tokenizer)
        # the frozen reference for held-out KL: the base under the adapter with LoRA, else a copy
        self.reference_copy = (
            None
            if config.model.lora.enabled or not self.kl_prompts
            else copy.deepcopy(model).eval().requires_grad_(False)
        )
        self.model = apply_lora(model, config.model.lora) if config.model.lora.enabled else model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(self.params, config.optim, config.train.steps)
        self.loss_fn = preference_loss(config.train)
        self.step = 0

    # 2. reference log-probs, once -------------------------------------------------

    def cache_reference(self) -> dict[str, torch.Tensor]:
        """The reference log-probs of train and eval pairs: computed and cached by a fresh run, read back on resume."""

        path = self.out / REFERENCE_FILE
        if self.checkpoint is not None and path.is_file():
            return load_file(str(path))
        batch, dtype, pad = self.config.train.reference_batch_size, self.config.model.dtype, self.tokenizer.pad_token_id
        train_chosen, train_rejected = reference_logprobs(self.model, self.train_pairs, pad, batch, dtype)
        eval_chosen, eval_rejected = reference_logprobs(self.model, self.eval_pairs, pad, batch, dtype)
        cache = {
            "train_chosen": train_chosen,
            "train_rejected": train_rejected,
            "eval_chosen": eval_chosen,
            "eval_rejected": eval_rejected,
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(cache, str(tmp))
        tmp.replace(path)
        return cache

    # 3. one optimiser step ----------------------------------------------------------

    def train_step(self, reference: dict[str, torch.Tensor]) -> dict[str, float]:
        config = self.config
        indices = batch_indices(len(self.train_pairs), config.train.batch_size, self.step, config.seed)
        self.model.train()
        stats: list[torch.Tensor] = []
        logps: list[torch.Tensor] = []
        for start in range(0, len(indices), config.micro_batch_size):
            chunk = indices[start : start + config.micro_batch_size]
            policy_chosen, policy_rejected = pair_logprobs(
                self.model, [self.train_pairs[i] for i in chunk], self.tokenizer.pad_token_id, config.model.dtype
            )
            losses, chosen_rewards, rejected_rewards = self.loss_fn(
                policy_chosen, policy_rejected, reference["train_chosen"][chunk], reference["train_rejected"][chunk]
            )
            (losses.sum() / len(indices)).backward()
            stats.append(torch.stack([losses.detach(), chosen_rewards, rejected_rewards]))
            logps.append(torch.stack([policy_chosen.detach(), policy_rejected.detach()]))
        learning_rate = self.scheduler.get_last_lr()[0]
        grad_norm = optimizer_step(self.params, self.optimizer, self.scheduler, config.optim.max_grad_norm)
        self.step += 1
        losses, chosen_rewards, rejected_rewards = torch.cat(stats, dim=1)
        policy_chosen, policy_rejected = torch.cat(logps, dim=1)
        return {
            **pair_metrics("train", losses, chosen_rewards, rejected_rewards),
            "train/logp_chosen": policy_chosen.mean().item(),
            "train/logp_rejected": policy_rejected.mean().item(),
            "train/grad_norm": grad_norm,
            "train/learning_rate": learning_rate,
        }

    # 4. evaluation -------------------------------------------------------------------

    @torch.no_grad()
    def evaluate_pairs(self, reference: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss, implicit-reward accuracy and margin on the held-out comparisons."""
        self.model.eval()
        batch = self.config.micro_batch_size
        chosen, rejected = [], []
        for start in range(0, len(self.eval_pairs), batch):
            c, r = pair_logprobs(
                self.model, self.eval_pairs[start : start + batch], self.tokenizer.pad_token_id, self.config.model.dtype
            )
            chosen.append(c)
            rejected.append(r)
        losses, chosen_rewards, rejected_rewards = self.loss_fn(
            torch.cat(chosen), torch.cat(rejected), reference["eval_chosen"], reference["eval_rejected"]
        )
        return pair_metrics("eval", losses, chosen_rewards, rejected_rewards)

    @torch.no_grad()
    def heldout_kl(self) -> tuple[dict[str, float], list[str], list[float]]:
        """Answers to the held-out prompts, KL(π‖π_ref) per answer (Σ log π - log π_ref), and gold scores."""

        if not self.kl_prompts:
            return {}, [], []
        config = self.config
        self.model.eval()
        generator_state = torch.get_rng_state()  # sampling must not shift the training RNG stream
        torch.manual_seed(config.seed + self.step)
        texts = [format_prompt(self.tokenizer, record) for record in self.kl_prompts]
        samples = sample(self.model, self.tokenizer, texts, config.generation, config.model.dtype)
        torch.set_rng_state(generator_state)
        response_mask = torch.cat([torch.zeros_like(samples.query_mask), samples.response_mask], dim=1)
        batch = (samples.input_ids, samples.attention_mask, response_mask)
        policy = sequence_logprobs(self.model, *batch, dtype=config.model.dtype)
        reference_model = self.model if self.reference_copy is None else self.reference_copy
        with reference_mode(reference_model):
            reference = sequence_logprobs(reference_model, *batch, dtype=config.model.dtype)
        kl = policy - reference  # (B,)
        answers = decode_responses(self.tokenizer, samples)
        metrics = {
            "kl/mean": kl.mean().item(),
            "eval/response_tokens": samples.response_mask.sum(1).float().mean().item(),
        }
        scores = [float("nan")] * len(answers)
        if self.gold is not None:
            gold = checked_scores(self.gold, [prompt_text(r) for r in self.kl_prompts], answers, self.kl_prompts)
            metrics["eval/score_mean"] = gold.mean().item()
            scores = gold.tolist()
        return metrics, answers, scores

    # 5. the loop and the outputs --------------------------------------------------

    def save_final(self, directory: Path) -> None:
        """A plain model directory + tokenizer (LoRA merged into a copy), loadable as a policy."""

        model: Any = self.model
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def train(self) -> dict[str, Any]:
        config, out = self.config, self.out
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        reference = self.cache_reference()  # before any update, so the policy is still the reference
        if self.checkpoint is not None:
            state = restore_training_state(self.checkpoint, self.model, self.optimizer, self.scheduler)
            self.step, initial = state["step"], state["extra"]["initial"]
        else:
            initial = {**self.evaluate_pairs(reference), **self.heldout_kl()[0]}
        started = time.time()
        tracker = Tracker(out, config.train.steps, f"dpo ({config.train.loss})", start_step=self.step)
        try:
            while self.step < config.train.steps:
                metrics = self.train_step(reference)
                if self.step % config.train.eval_every == 0 or self.step == config.train.steps:
                    metrics.update(self.evaluate_pairs(reference))
                    kl_metrics, answers, scores = self.heldout_kl()
                    metrics.update(kl_metrics)
                    tracker.log_samples(self.step, [prompt_text(r) for r in self.kl_prompts], answers, scores)
                tracker.log(self.step, metrics)
                if self.step % config.train.checkpoint_every == 0 or self.step == config.train.steps:
                    save_training_state(
                        out, self.step, self.model, self.optimizer, self.scheduler, {"initial": initial}
                    )
        finally:
            tracker.close()
        final = write_directory_atomic(out / "final", self.save_final)
        keys = ["train/loss", "eval/reward_accuracy", "eval/reward_margin", "kl/mean", "eval/score_mean"]
        plot_metrics(out / "metrics.jsonl", keys, out / "training.png", f"rlhfkit dpo ({config.train.loss})")
        last_eval = next(h for h in reversed(read_jsonl(out / "metrics.jsonl")) if "eval/loss" in h)
        summary = {
            "steps": self.step,
            "loss": config.train.loss,
            "beta": config.train.beta,
            "train_pairs": len(self.train_pairs),
            "eval_pairs": len(self.eval_pairs),
            "initial": initial,
            "final_eval": {k: v for k, v in last_eval.items() if k != "step" and not k.startswith("train/")},
            "wall_s": time.time() - started,
            "final": str(final),
        }
        write_json_atomic(out / "summary.json", summary)
        return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DPOConfig)


def run(args: argparse.Namespace) -> int:
    config = run_config(DPOConfig, args)
    summary = DPORun(config, resume=args.resume).train()
    final = summary["final_eval"]
    kl = f", KL to reference {final['kl/mean']:.2f} nats" if "kl/mean" in final else ""
    print(
        f"rlhfkit dpo: held-out implicit-reward accuracy {summary['initial']['eval/reward_accuracy']:.2f} -> {final['eval/reward_accuracy']:.2f}"
        f", margin {final['eval/reward_margin']:.3f}{kl} after {summary['steps']} steps; model in {summary['final']}"
    )
    return 0
