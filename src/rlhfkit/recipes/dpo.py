"""`rlhfkit dpo`: direct preference optimisation (Rafailov et al. 2023) and two variants.

    1 load       comparisons (prompt, chosen, rejected); hold out an eval split
    2 reference  log π_ref(y_w | x) and log π_ref(y_l | x) for every pair, computed ONCE before
                 training and kept in every checkpoint (reference_logprobs), so --resume reads them back
    3 train      AdamW on the loss picked once by train.loss:
                   dpo           -log σ(β h)                       h = (log π(y_w) - log π_ref(y_w))
                   ipo           (h - 1/(2β))²  (Azar et al. 2023)        - (log π(y_l) - log π_ref(y_l))
                   conservative  DPO with labels flipped w.p. train.label_smoothing (Mitchell 2023)
    4 evaluate   held-out loss, implicit-reward accuracy and margin; KL to the reference on held-out
                 prompts: sample y ~ π(·|x), measure Σ_t log π(y_t) - log π_ref(y_t) per response
    5 save       checkpoints for --resume; final/ = a plain HF model directory (LoRA merged)

Where this departs from a naive implementation, and why:
- The reference is never run during training: its log-probs of the fixed pairs do not change, so one
  pass over the data set replaces one reference forward per step. With LoRA the reference is the base
  with the adapter disabled (one copy of weights); else a frozen copy serves the held-out KL only.
- Chosen and rejected responses go through the policy in one padded batch (one forward).
- The loss is the mean over the optimiser batch's pairs however it is split into micro-batches and
  processes (`share_weight`); every process computes the reference itself (no file to wait on).
- The KL estimate is the plain Monte-Carlo k1 estimator of KL(π‖π_ref) at temperature 1;
  with generation.temperature ≠ 1 it measures the divergence of the tempered sampler.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlhfkit.algorithms import share_weight
from rlhfkit.configs.dpo import DPOConfig
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.loading import save_policy
from rlhfkit.models.lora import apply_lora
from rlhfkit.rewards import build_reward, checked_scores
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.runtime import Runtime, Samples, StepOutput, check_micro_batches
from rlhfkit.training import batch_indices
from rlhfkit.training.logprobs import sequence_logprobs
from rlhfkit.training.preferences import (
    LOSSES,
    STATISTICS,
    load_pairs,
    pair_logprobs,
    reference_logprobs,
    reference_mode,
    statistic_sums,
)
from rlhfkit.training.trainer import OptimizerTrainer, trainer_command

REFERENCE = "reference_logprobs"  # the checkpoint's tensor group of the reference log-probs


class DPOTrainer(OptimizerTrainer):
    """DPO, validated at construction (before any output); `rlhfkit.runtime.fit` runs it."""

    command = "dpo"
    plot_keys = ("train/loss", "eval/reward_accuracy", "eval/reward_margin", "kl/mean", "eval/score_mean")

    def __init__(self, config: DPOConfig, runtime: Runtime | None = None):
        self.config = config
        self.runtime = runtime or Runtime(config.model.dtype, config.seed)
        train = config.train
        self.tokenizer = load_tokenizer(config.model.name)
        self.pairs = load_pairs(config.data, self.tokenizer)  # {"train": [...], "eval": [...]}
        self.kl_prompts = load_records(config.data.prompts, "prompts")[: train.kl_prompts] if train.kl_prompts else []
        model = load_causal_lm(config.model.name, self.tokenizer)
        self.runtime.settle_precision(config.model, model)
        check_micro_batches(train.batch_size, config.train.micro_batch, self.runtime.num_processes)
        self.gold = build_reward(config.reward, config.model.dtype) if train.score_answers else None
        keep_copy = self.kl_prompts and not config.model.lora.enabled  # held-out KL's reference; LoRA's is the base
        self.reference_copy = copy.deepcopy(model).requires_grad_(False).to(self.runtime.device) if keep_copy else None
        self.prepare_training(apply_lora(model, config.model.lora) if config.model.lora.enabled else model)
        self.loss_fn = LOSSES[train.loss](train)
        self._reference: dict[str, Tensor] | None = None

    @property
    def reference(self) -> dict[str, Tensor]:
        """(N, 2) log π_ref of the "train" and "eval" pairs (chosen, rejected), on the run's device: computed on
        first use, right only while the policy is the reference (before a step, or a checkpoint's weights, move it)."""
        if self._reference is None:
            if self.step > 0:
                raise RuntimeError("DPOTrainer: the reference log-probs are computed before the policy moves")
            model, pad, batch = self.unwrapped, self.tokenizer.pad_token_id, self.config.train.reference_batch_size
            self._reference = {s: reference_logprobs(model, p, pad, batch, self.runtime) for s, p in self.pairs.items()}
        return self._reference

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        """The optimiser's state, and the reference log-probs: a resumed run reads them instead of recomputing."""
        tensors, state = super().checkpoint_state()
        return {**tensors, REFERENCE: {split: logprobs.cpu() for split, logprobs in self.reference.items()}}, state

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        """A checkpoint without the reference (written before checkpoints kept it) has it computed first, while the
        policy is still the initial model."""
        saved = tensors.get(REFERENCE)
        self._reference = self.runtime.to_device(saved) if saved is not None else self.reference
        super().load_checkpoint_state(tensors, state)

    def pair_metrics(self, model: nn.Module, split: str, indices: list[int], total: int) -> dict[str, float]:
        """STATISTICS over the `total` pairs of all processes, this one holding `indices` of `split`. With gradients
        on, each micro-batch's mean loss is backwarded weighted by its share of `total` (`share_weight`)."""
        pairs, reference = self.pairs[split], self.reference[split]
        sums, size = torch.zeros(len(STATISTICS), device=self.runtime.device), self.config.train.micro_batch
        for chunk in [indices[start : start + size] for start in range(0, len(indices), size)]:
            policy = pair_logprobs(model, [pairs[i] for i in chunk], self.tokenizer.pad_token_id, self.runtime)
            losses, *rewards = self.loss_fn(*policy.unbind(1), *reference[chunk].unbind(1))
            if torch.is_grad_enabled():
                self.runtime.backward(losses.mean() * share_weight(len(chunk), total, self.runtime.num_processes))
            sums += statistic_sums(policy, losses, *rewards)
        return {f"{split}/{name}": value / total for name, value in zip(STATISTICS, self.runtime.sum(sums).tolist())}

    def train_step(self) -> StepOutput:
        """One optimiser step on the global batch: every process draws it and backwards its share."""
        indices = batch_indices(len(self.pairs["train"]), self.config.train.batch_size, self.step, self.config.seed)
        self.model.train()
        metrics = self.pair_metrics(self.model, "train", self.runtime.shard(indices), len(indices))
        return self.optimizer_metrics(metrics), None

    @torch.no_grad()
    def evaluate(self) -> StepOutput:
        """Held-out pair metrics (each process its share); KL(π‖π_ref) and gold scores of held-out prompts' answers."""
        config, model, dtype, pairs = self.config, self.unwrapped.eval(), self.runtime.precision, self.pairs["eval"]
        metrics = self.pair_metrics(
            model, "eval", self.runtime.shard(range(len(pairs)), for_gradients=False), len(pairs)
        )
        if not self.kl_prompts:
            return metrics, None
        texts = [format_prompt(self.tokenizer, record) for record in self.kl_prompts]
        with self.runtime.forked_rng(config.seed + self.step):
            samples = sample(model, self.tokenizer, texts, config.generation, dtype)
        response_mask = torch.cat([torch.zeros_like(samples.query_mask), samples.response_mask], dim=1)
        batch = (samples.input_ids, samples.attention_mask, response_mask)
        reference_model = model if self.reference_copy is None else self.reference_copy
        with reference_mode(reference_model):
            reference = sequence_logprobs(reference_model, *batch, dtype=dtype)
        kl = sequence_logprobs(model, *batch, dtype=dtype) - reference  # (B,)
        prompts, answers = [prompt_text(r) for r in self.kl_prompts], decode_responses(self.tokenizer, samples)
        lengths = samples.response_mask.sum(1).float()
        metrics.update({"kl/mean": kl.mean().item(), "eval/response_tokens": lengths.mean().item()})
        scores = [float("nan")] * len(answers)
        if self.gold is not None:
            gold = checked_scores(self.gold, prompts, answers, self.kl_prompts)
            metrics["eval/score_mean"], scores = gold.mean().item(), gold.tolist()
        return metrics, Samples(prompts, answers, scores)

    def save_final(self, directory: Path) -> None:
        """A plain model directory + tokenizer (LoRA merged into a copy, the adapter in adapter/): a policy."""
        save_policy(self.unwrapped, self.tokenizer, directory, self.config.model.dtype)

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The held-out figures before the first update (`initial`: the step-0 record) and at the last evaluation."""
        evals = [{k: v for k, v in h.items() if k.startswith(("eval/", "kl/"))} for h in history if "eval/loss" in h]
        train, sizes = self.config.train, {f"{split}_pairs": len(pairs) for split, pairs in self.pairs.items()}
        return {"loss": train.loss, "beta": train.beta, **sizes, "initial": evals[0], "final_eval": evals[-1]}


def headline(summary: dict[str, Any]) -> str:
    initial, final = summary["initial"], summary["final_eval"]
    kl = f", KL to reference {final['kl/mean']:.2f} nats" if "kl/mean" in final else ""
    return (
        f"held-out implicit-reward accuracy {initial['eval/reward_accuracy']:.2f} -> "
        f"{final['eval/reward_accuracy']:.2f}, margin {final['eval/reward_margin']:.3f}{kl} "
        f"after {summary['steps']} steps; model in {summary['final']}"
    )


add_arguments, run = trainer_command(DPOTrainer, DPOConfig, headline)
