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

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from rlhfkit.assets import DEMONSTRATIONS, EVAL_PROMPTS
from rlhfkit.checkpoint import write_directory_atomic
from rlhfkit.config import GenerationConfig, ModelConfig, add_config_arguments, field, save_config
from rlhfkit.errors import UserError
from rlhfkit.training import OptimConfig


@dataclasses.dataclass
class SFTDataConfig:
    train: str = field(
        str(DEMONSTRATIONS), "demonstrations: prompt + response, or messages ending with the assistant turn"
    )
    eval: str = field("", "held-out demonstrations (empty: hold out data.eval_fraction of data.train)")
    eval_fraction: float = field(0.1, "share of data.train held out when data.eval is empty")
    prompts: str = field(
        str(EVAL_PROMPTS), "prompts whose sampled answers are logged to samples.jsonl at each evaluation"
    )
    max_length: int = field(
        256, "tokens per example; the prompt is cut from the left first, the response never dropped"
    )
    packing: bool = field(False, "concatenate examples into rows of max_length tokens")

    def __post_init__(self) -> None:
        if not 0 < self.eval_fraction < 1:
            raise UserError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.max_length < 2:
            raise UserError(f"data.max_length must be at least 2, got {self.max_length}")


@dataclasses.dataclass
class SFTTrainConfig:
    steps: int = field(100, "optimiser steps")
    batch_size: int = field(8, "examples (packed rows with data.packing) per optimiser step")
    micro_batch_size: int = field(
        0, "examples per forward pass; gradients accumulate up to batch_size (0: = batch_size)"
    )
    eval_every: int = field(25, "evaluate every N steps (and at the end)")
    eval_samples: int = field(4, "prompts from data.prompts answered at each evaluation (0: none)")
    checkpoint_every: int = field(50, "save a checkpoint every N steps (and at the end)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size < 0 or self.batch_size % (self.micro_batch_size or self.batch_size):
            raise UserError(
                f"train.batch_size {self.batch_size} is not divisible by train.micro_batch_size {self.micro_batch_size}"
            )


@dataclasses.dataclass
class SFTConfig:
    model: ModelConfig = field(factory=ModelConfig, doc="the model to fine-tune")
    data: SFTDataConfig = field(factory=SFTDataConfig, doc="data")
    train: SFTTrainConfig = field(factory=SFTTrainConfig, doc="schedule")
    optim: OptimConfig = field(factory=lambda: OptimConfig(learning_rate=2e-5), doc="optimiser")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling of the logged answers")
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/sft-<time>)")

    @property
    def micro_batch_size(self) -> int:
        return self.train.micro_batch_size or self.train.batch_size


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def split_records(
    train: list[dict[str, Any]], eval_records: list[dict[str, Any]] | None, eval_fraction: float, source: str
) -> tuple[list, list]:
    """(train, eval): `eval_records` if given, else the last ceil(fraction * N) of `train` (at least 1)."""
    if eval_records:
        return train, eval_records
    held_out = max(1, round(len(train) * eval_fraction))
    if len(train) - held_out < 1:
        raise UserError(
            f"{source}: {len(train)} demonstration(s) are too few to hold out an eval split; give data.eval or more records"
        )
    return train[:-held_out], train[-held_out:]


def tokenize_demonstrations(
    tokenizer: Any, records: list[dict[str, Any]], max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """Tokenised examples (prompt + response + EOS) and how many responses had to be cut."""
    from rlhfkit.data.collate import tokenize_prompt_response
    from rlhfkit.data.records import demonstration_response

    items = [
        tokenize_prompt_response(tokenizer, record, demonstration_response(record), max_length) for record in records
    ]
    return items, sum(item["truncated"] for item in items)


# ---------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------


def batch_loss_backward(
    model: torch.nn.Module, items: list[dict[str, Any]], pad_token_id: int, micro_batch_size: int, dtype: str
) -> float:
    """Backward the mean response-token NLL of `items`, micro-batch by micro-batch; returns the loss.

    Each micro-batch's mean is weighted by its share of the batch's response tokens,
    so the gradient equals that of one forward over the whole batch.
    """
    from rlhfkit.data.collate import pad_batch
    from rlhfkit.training import response_token_nll

    total_tokens = sum(sum(item["response_mask"][1:]) for item in items)
    loss_sum = 0.0
    for start in range(0, len(items), micro_batch_size):
        chunk = items[start : start + micro_batch_size]
        tokens = sum(sum(item["response_mask"][1:]) for item in chunk)
        loss = response_token_nll(model, *pad_batch(chunk, pad_token_id), dtype=dtype) * (tokens / total_tokens)
        loss.backward()
        loss_sum += loss.item()
    return loss_sum


@torch.no_grad()
def evaluation_loss(
    model: torch.nn.Module, items: list[dict[str, Any]], pad_token_id: int, batch_size: int, dtype: str
) -> float:
    """Mean response-token NLL over all of `items` (token-weighted)."""
    from rlhfkit.data.collate import pad_batch
    from rlhfkit.training import response_token_logprobs

    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        logprobs, mask = response_token_logprobs(
            model, *pad_batch(items[start : start + batch_size], pad_token_id), dtype=dtype
        )
        total -= torch.where(mask, logprobs, 0.0).sum().item()
        count += int(mask.sum())
    return total / count


class SFTRun:
    """Supervised fine-tuning, validated at construction (before any output), trained by `train()`."""

    def __init__(self, config: SFTConfig, resume: bool = False):
        from rlhfkit.data import load_records
        from rlhfkit.data.collate import pack_items
        from rlhfkit.models import load_causal_lm, load_tokenizer
        from rlhfkit.models.lora import apply_lora
        from rlhfkit.training import build_optimizer, resolve_out_dir

        self.config = config
        self.out, self.checkpoint = resolve_out_dir(config.out, "sft", resume)
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
                f"rlhfkit sft: warning: {truncated + eval_truncated} response(s) longer than data.max_length={data.max_length} were cut at their end (no EOS)"
            )
        if data.packing:
            self.train_items = pack_items(self.train_items, data.max_length)
        self.num_train_records = len(train_records)

        torch.manual_seed(config.seed)
        model = load_causal_lm(config.model.name, self.tokenizer)
        self.model = apply_lora(model, config.model.lora) if config.model.lora.enabled else model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(self.params, config.optim, config.train.steps)
        self.step = 0

    def train_step(self) -> dict[str, float]:
        from rlhfkit.training import batch_indices, optimizer_step

        config = self.config
        indices = batch_indices(len(self.train_items), config.train.batch_size, self.step, config.seed)
        self.model.train()
        loss = batch_loss_backward(
            self.model,
            [self.train_items[i] for i in indices],
            self.tokenizer.pad_token_id,
            config.micro_batch_size,
            config.model.dtype,
        )
        learning_rate = self.scheduler.get_last_lr()[0]
        grad_norm = optimizer_step(self.params, self.optimizer, self.scheduler, config.optim.max_grad_norm)
        self.step += 1
        return {"train/loss": loss, "train/grad_norm": grad_norm, "train/learning_rate": learning_rate}

    def evaluate(self) -> tuple[dict[str, float], list[str]]:
        """Held-out loss, and answers to the sample prompts."""
        from rlhfkit.data import format_prompt
        from rlhfkit.rollout.generation import decode_responses, sample

        self.model.eval()
        loss = evaluation_loss(
            self.model,
            self.eval_items,
            self.tokenizer.pad_token_id,
            self.config.micro_batch_size,
            self.config.model.dtype,
        )
        answers: list[str] = []
        if self.sample_prompts:
            generator_state = torch.get_rng_state()  # sampling must not shift the training RNG stream
            torch.manual_seed(self.config.seed + self.step)
            texts = [format_prompt(self.tokenizer, record) for record in self.sample_prompts]
            answers = decode_responses(
                self.tokenizer,
                sample(self.model, self.tokenizer, texts, self.config.generation, self.config.model.dtype),
            )
            torch.set_rng_state(generator_state)
        return {"eval/loss": loss}, answers

    def save_final(self, directory: Path) -> None:
        """A plain model directory + tokenizer (LoRA merged into a copy), the PPO policy and reference."""
        import copy

        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def train(self) -> dict[str, Any]:
        from rlhfkit.data import prompt_text
        from rlhfkit.tracking import Tracker, plot_metrics, read_jsonl, write_json_atomic
        from rlhfkit.training import restore_training_state, save_training_state

        config, out = self.config, self.out
        if self.checkpoint is not None:
            state = restore_training_state(self.checkpoint, self.model, self.optimizer, self.scheduler)
            self.step, initial_eval = state["step"], state["extra"]["eval_loss_initial"]
        else:
            initial_eval = self.evaluate()[0]["eval/loss"]
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        started = time.time()
        tracker = Tracker(out, config.train.steps, "sft", start_step=self.step)
        try:
            while self.step < config.train.steps:
                metrics = self.train_step()
                if self.step % config.train.eval_every == 0 or self.step == config.train.steps:
                    eval_metrics, answers = self.evaluate()
                    metrics.update(eval_metrics)
                    tracker.log_samples(
                        self.step, [prompt_text(r) for r in self.sample_prompts], answers, [float("nan")] * len(answers)
                    )
                tracker.log(self.step, metrics)
                if self.step % config.train.checkpoint_every == 0 or self.step == config.train.steps:
                    save_training_state(
                        out, self.step, self.model, self.optimizer, self.scheduler, {"eval_loss_initial": initial_eval}
                    )
        finally:
            tracker.close()
        final = write_directory_atomic(out / "final", self.save_final)
        plot_metrics(out / "metrics.jsonl", ["train/loss", "eval/loss"], out / "training.png", "rlhfkit sft")
        history = read_jsonl(out / "metrics.jsonl")
        evals = [h["eval/loss"] for h in history if h.get("eval/loss") is not None]
        summary = {
            "steps": self.step,
            "train_records": self.num_train_records,
            "eval_records": len(self.eval_items),
            "eval_loss_initial": initial_eval,
            "eval_loss_final": evals[-1] if evals else None,
            "train_loss_last": history[-1]["train/loss"] if history else None,
            "wall_s": time.time() - started,
            "final": str(final),
        }
        write_json_atomic(out / "summary.json", summary)
        return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, SFTConfig)


def run(args: argparse.Namespace) -> int:
    from rlhfkit.training import run_config

    config = run_config(SFTConfig, args)
    summary = SFTRun(config, resume=args.resume).train()
    initial = summary["eval_loss_initial"]
    shown = f"{initial:.3f} -> " if initial is not None else ""
    print(
        f"rlhfkit sft: held-out loss {shown}{summary['eval_loss_final']:.3f} after {summary['steps']} steps; model in {summary['final']}"
    )
    return 0
