"""`rlhfkit sft`: supervised fine-tuning on demonstrations (the first box of InstructGPT's figure 2).

    1 load      demonstrations; tokenise prompt + response + EOS (EOS is trained: it teaches stopping)
    2 split     a held-out eval set (data.eval, or the last data.eval_fraction of data.train)
    3 train     AdamW on the mean negative log-likelihood of the response tokens only
    4 evaluate  held-out loss and a few sampled answers every train.eval_every steps
    5 save      checkpoints for --resume; final/ = a plain HF model directory + tokenizer
                (a LoRA adapter is merged), loadable as the PPO policy and reference

Where this departs from a naive implementation, and why:
- The loss is a mean over all response tokens of the optimiser batch, however it is split into
  micro-batches (each micro-batch's sum is divided by the batch's token count), so
  train.micro_batch_size changes memory, not the update.
- Packing (data.packing) concatenates examples into rows of data.max_length tokens; attention
  crosses example boundaries inside a row (GPT-style packing), the loss stays response-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlhfkit.configs.sft import SFTConfig
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.data.collate import pack_items, pad_batch, tokenize_prompt_response
from rlhfkit.data.records import demonstration_response
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.loading import save_policy
from rlhfkit.models.lora import apply_lora
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.runtime import Runtime, Samples, StepOutput, check_micro_batches
from rlhfkit.training import batch_indices, split_records
from rlhfkit.training.logprobs import response_token_logprobs, response_token_nll
from rlhfkit.training.trainer import OptimizerTrainer, backward_in_micro_batches, trainer_command

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def tokenize_demonstrations(
    tokenizer: Any, records: list[dict[str, Any]], max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """Tokenised examples (prompt + response + EOS) and how many responses had to be cut."""

    items = [
        tokenize_prompt_response(tokenizer, record, demonstration_response(record), max_length) for record in records
    ]
    return items, sum(item["truncated"] for item in items)


# ---------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------


def batch_loss_backward(
    model: torch.nn.Module,
    items: list[dict[str, Any]],
    pad_token_id: int,
    runtime: Runtime,
    micro_batch_size: int,
    total_tokens: int,
) -> float:
    """Backward the response-token NLL of this process's `items`, a share of a batch of `total_tokens` tokens.

    Returns this process's share of the batch's loss (`backward_in_micro_batches`).
    """

    def loss_of(chunk: list[dict[str, Any]]) -> torch.Tensor:
        return response_token_nll(model, *runtime.to_device(pad_batch(chunk, pad_token_id)), dtype=runtime.precision)

    return backward_in_micro_batches(model, items, micro_batch_size, runtime, loss_of, response_tokens, total_tokens)


def response_tokens(items: list[dict[str, Any]]) -> int:
    """Tokens the loss counts in `items`: response tokens after the first position."""
    return sum(sum(item["response_mask"][1:]) for item in items)


@torch.no_grad()
def evaluation_loss(
    model: torch.nn.Module, items: list[dict[str, Any]], pad_token_id: int, runtime: Runtime, batch_size: int
) -> float:
    """Mean response-token NLL over all of `items` (token-weighted)."""
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = runtime.to_device(pad_batch(items[start : start + batch_size], pad_token_id))
        logprobs, mask = response_token_logprobs(model, *batch, dtype=runtime.precision)
        total -= torch.where(mask, logprobs, 0.0).sum().item()
        count += int(mask.sum())
    return total / count


class SFTTrainer(OptimizerTrainer):
    """Supervised fine-tuning, validated at construction (before any output); `rlhfkit.runtime.fit` runs it."""

    command = "sft"
    plot_keys = ("train/loss", "eval/loss")

    def __init__(self, config: SFTConfig, runtime: Runtime | None = None):
        self.config = config
        self.runtime = runtime or Runtime(config.model.dtype, config.seed)
        data = config.data
        train_records = load_records(data.train, "demonstrations")
        eval_records = load_records(data.eval, "demonstrations") if data.eval else None
        train_records, eval_records = split_records(train_records, eval_records, data.eval_fraction, data.train)
        self.sample_prompts = (
            load_records(data.prompts, "prompts")[: config.train.eval_samples] if config.train.eval_samples else []
        )

        self.tokenizer = load_tokenizer(config.model.name)
        self.train_items, truncated = tokenize_demonstrations(self.tokenizer, train_records, data.max_length)
        self.eval_items, eval_truncated = tokenize_demonstrations(self.tokenizer, eval_records, data.max_length)
        if truncated + eval_truncated:
            print(
                f"rlhfkit sft: warning: {truncated + eval_truncated} response(s) longer than "
                f"data.max_length={data.max_length} were cut at their end (no EOS)"
            )
        if data.packing:
            self.train_items = pack_items(self.train_items, data.max_length)
        self.num_train_records = len(train_records)

        model = load_causal_lm(config.model.name, self.tokenizer)
        self.runtime.settle_precision(config.model, model)
        check_micro_batches(config.train.batch_size, config.train.micro_batch, self.runtime.num_processes)
        self.prepare_training(apply_lora(model, config.model.lora) if config.model.lora.enabled else model)

    def train_step(self) -> StepOutput:
        config = self.config
        indices = batch_indices(len(self.train_items), config.train.batch_size, self.step, config.seed)
        batch = [self.train_items[i] for i in indices]
        self.model.train()
        local = self.runtime.shard(batch)
        pad = self.tokenizer.pad_token_id
        loss = batch_loss_backward(
            self.model, local, pad, self.runtime, config.train.micro_batch, response_tokens(batch)
        )
        loss = float(self.runtime.sum(torch.tensor(loss, device=self.runtime.device)))
        return self.optimizer_metrics({"train/loss": loss}), None

    def evaluate(self) -> StepOutput:
        """Held-out loss, and answers to the sample prompts (sampled on their own seed)."""
        model = self.unwrapped.eval()
        loss = evaluation_loss(
            model, self.eval_items, self.tokenizer.pad_token_id, self.runtime, self.config.train.micro_batch
        )
        if not self.sample_prompts:
            return {"eval/loss": loss}, None
        texts = [format_prompt(self.tokenizer, record) for record in self.sample_prompts]
        with self.runtime.forked_rng(self.config.seed + self.step):
            samples = sample(model, self.tokenizer, texts, self.config.generation, self.runtime.precision)
        answers = decode_responses(self.tokenizer, samples)
        prompts = [prompt_text(r) for r in self.sample_prompts]
        return {"eval/loss": loss}, Samples(prompts, answers, [float("nan")] * len(answers))

    def save_final(self, directory: Path) -> None:
        """A plain model directory + tokenizer (LoRA merged into a copy, the adapter in adapter/), the PPO policy."""
        save_policy(self.unwrapped, self.tokenizer, directory, self.config.model.dtype)

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        evals = [h["eval/loss"] for h in history if h.get("eval/loss") is not None]
        trained = [h for h in history if "train/loss" in h]
        return {
            "train_records": self.num_train_records,
            "eval_records": len(self.eval_items),
            "eval_loss_initial": evals[0],
            "eval_loss_final": evals[-1],
            "train_loss_last": trained[-1]["train/loss"] if trained else None,
        }


add_arguments, run = trainer_command(SFTTrainer, SFTConfig, lambda summary: (
    f"held-out loss {summary['eval_loss_initial']:.3f} -> {summary['eval_loss_final']:.3f} "
    f"after {summary['steps']} steps; model in {summary['final']}"
))  # fmt: skip
