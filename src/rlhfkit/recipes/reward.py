"""`rlhfkit rm`: a reward model from comparisons, K-way rankings or best-of-K choices.

A reward model is a language-model backbone with a scalar head read at the last real token
(the EOS after the response), `rlhfkit.models.ScalarHeadModel`.

    1 load       preference records; their kind picks the loss once:
                   comparisons            -log σ(r_w - r_l [- margin])        (Stiennon et al. 2020)
                   comparisons + "label"  soft Bradley-Terry cross-entropy      (AI feedback)
                   rankings               all C(K,2) pairs of a prompt, weight 1/C(K,2), in one batch (InstructGPT)
                   choices                softmax cross-entropy over the K rewards (Ziegler et al. 2019)
    2 train      AdamW, full or LoRA, from any causal LM or an `rlhfkit sft` final/
    3 evaluate   held-out pair accuracy, mean margin, calibration of σ(r_w - r_l) (ECE, reliability plot)
    4 normalise  sample responses of the reference policy to the training prompts and set gain and bias
                 so that they score mean 0, std 1 (Stiennon et al.; Ziegler et al.); stored in reward.json
    5 save       final/: backbone + tokenizer + scalar_head.safetensors + reward.json, the reward
                 source of `rlhfkit ppo --set reward.kind=model reward.model=DIR/final` and its critic's start

Where this departs from a naive implementation, and why:
- The batch loss is the mean over records (a ranking counts once, as in InstructGPT), however the
  batch is split into micro-batches, so train.micro_batch_size changes memory, not the update.
- Sequences are prompt + response + EOS, right-padded; the head is read at the last real token,
  so a response is always judged with its EOS, as `rlhfkit ppo` scores it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhfkit.algorithms import (
    best_of_k_loss,
    bradley_terry_loss,
    preference_accuracy,
    ranking_loss,
    soft_bradley_terry_loss,
)
from rlhfkit.checkpoint import write_directory_atomic
from rlhfkit.config import GenerationConfig, ModelConfig, add_config_arguments, field, save_config
from rlhfkit.data import format_prompt, load_records, prompt_messages
from rlhfkit.data.collate import tokenize_prompt_response
from rlhfkit.data.records import detect_kind, read_rows
from rlhfkit.errors import UserError
from rlhfkit.models import ScalarHeadModel, load_backbone, load_causal_lm, load_tokenizer
from rlhfkit.models.heads import check_pooling
from rlhfkit.models.lora import apply_lora
from rlhfkit.recipes.sft import split_records
from rlhfkit.rewards import score_items
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.tracking import Tracker, new_figure, plot_metrics, write_json_atomic
from rlhfkit.training import (
    OptimConfig,
    batch_indices,
    build_optimizer,
    optimizer_step,
    resolve_out_dir,
    restore_training_state,
    run_config,
    save_training_state,
)

PREFERENCE_KINDS = ("comparisons", "rankings", "choices")


@dataclasses.dataclass
class RMDataConfig:
    train: str = field("", "comparisons, rankings or choices (e.g. the output of `rlhfkit label`); required")
    eval: str = field("", "held-out records of the same kind (empty: hold out data.eval_fraction of data.train)")
    eval_fraction: float = field(0.1, "share of data.train held out when data.eval is empty")
    max_length: int = field(
        256, "tokens per prompt + response; the prompt is cut from the left first, the response never dropped"
    )

    def __post_init__(self) -> None:
        if not 0 < self.eval_fraction < 1:
            raise UserError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.max_length < 2:
            raise UserError(f"data.max_length must be at least 2, got {self.max_length}")


@dataclasses.dataclass
class RMTrainConfig:
    steps: int = field(200, "optimiser steps")
    batch_size: int = field(8, "records (a pair, a ranking or a choice) per optimiser step")
    micro_batch_size: int = field(
        0, "records per forward pass; gradients accumulate up to batch_size (0: = batch_size)"
    )
    eval_every: int = field(50, "evaluate every N steps (and at the end)")
    checkpoint_every: int = field(100, "save a checkpoint every N steps (and at the end)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size < 0 or self.batch_size % (self.micro_batch_size or self.batch_size):
            raise UserError(
                f"train.batch_size {self.batch_size} is not divisible by train.micro_batch_size {self.micro_batch_size}"
            )


@dataclasses.dataclass
class NormalizeConfig:
    enabled: bool = field(True, "set gain and bias so the reference policy's responses score mean 0, std 1")
    policy: str = field("", "the reference policy that samples those responses (empty: model.name)")
    num_prompts: int = field(64, "training prompts answered by the reference policy (one response each)")
    batch_size: int = field(16, "prompts per sampling batch")
    generation: GenerationConfig = field(factory=GenerationConfig, doc="sampling of the reference responses")

    def __post_init__(self) -> None:
        if self.num_prompts < 2 or self.batch_size <= 0:
            raise UserError(
                f"normalize.num_prompts must be >= 2 and normalize.batch_size > 0, got {self.num_prompts}, {self.batch_size}"
            )


@dataclasses.dataclass
class RMConfig:
    model: ModelConfig = field(factory=ModelConfig, doc="the backbone: any causal LM, or an `rlhfkit sft` final/")
    data: RMDataConfig = field(factory=RMDataConfig, doc="data")
    train: RMTrainConfig = field(factory=RMTrainConfig, doc="schedule")
    optim: OptimConfig = field(factory=lambda: OptimConfig(learning_rate=1e-5), doc="optimiser")
    pooling: str = field(
        "last",
        "where the head reads: last (the last token, EOS; InstructGPT) or mean (averaged over the response tokens)",
    )
    normalize: NormalizeConfig = field(factory=NormalizeConfig, doc="reward normalisation after training")
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/rm-<time>)")

    def __post_init__(self) -> None:
        check_pooling(self.pooling)

    @property
    def micro_batch_size(self) -> int:
        return self.train.micro_batch_size or self.train.batch_size


# ---------------------------------------------------------------------------
# Records -> response sets with targets
# ---------------------------------------------------------------------------


def preference_kind(source: str) -> str:
    """comparisons, rankings or choices: what the file's first record is."""

    name, rows = read_rows(source)
    if not rows or not isinstance(rows[0][1], dict):
        raise UserError(f"{name}: expected comparison, ranking or choice records")
    found = detect_kind(rows[0][1])
    kind = "rankings" if found == "rankings_or_candidates" else found
    if kind not in PREFERENCE_KINDS:
        raise UserError(
            f"{name}:{rows[0][0]}: a reward model trains on comparisons, rankings or choices; this is a {kind} record"
        )
    return kind


def responses_best_first(record: dict[str, Any], kind: str) -> list[str]:
    """The record's responses: [chosen, rejected] for a comparison, as listed otherwise."""
    return [record["chosen"], record["rejected"]] if kind == "comparisons" else list(record["responses"])


def preference_pairs(record: dict[str, Any], kind: str) -> list[tuple[int, int]]:
    """(winner, loser) indices into `responses_best_first` that the record asserts, for accuracy and calibration."""
    if kind == "comparisons":
        return [(1, 0)] if record.get("label", 1.0) < 0.5 else [(0, 1)] if record.get("label", 1.0) > 0.5 else []
    count = len(record["responses"])
    if kind == "rankings":
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    return [(record["best"], j) for j in range(count) if j != record["best"]]


def check_loss_fields(records: list[dict[str, Any]], kind: str, source: str) -> str:
    """The loss's name for these records: bradley_terry, soft_bradley_terry, ranking or best_of_k."""
    if kind == "rankings":
        return "ranking"
    if kind == "choices":
        return "best_of_k"
    with_label = [i for i, r in enumerate(records) if "label" in r]
    if with_label and any("margin" in r for r in records):
        raise UserError(f"{source}: records carry both 'label' (soft preference) and 'margin'; use one of them")
    return "soft_bradley_terry" if with_label else "bradley_terry"


def preference_loss(name: str) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """rewards (N, K_max) best-first + targets -> (N,) loss per record; picked once from the record kind."""

    losses = {
        "bradley_terry": lambda r, t: bradley_terry_loss(r[:, 0], r[:, 1], t["margin"]),
        "soft_bradley_terry": lambda r, t: soft_bradley_terry_loss(r[:, 0], r[:, 1], t["label"]),
        "ranking": lambda r, t: ranking_loss(r, t["num_responses"]),
        "best_of_k": lambda r, t: best_of_k_loss(r, t["best"], t["num_responses"]),
    }
    return losses[name]


def targets_of(records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """(N,) tensors of what the losses need: margin, label, best, num_responses."""
    return {
        "margin": torch.tensor([float(r.get("margin", 0.0)) for r in records]),
        "label": torch.tensor([float(r.get("label", 1.0)) for r in records]),
        "best": torch.tensor([int(r.get("best", 0)) for r in records]),
        "num_responses": torch.tensor([len(r["items"]) for r in records]),
    }


def tokenize_preferences(
    tokenizer: Any, records: list[dict[str, Any]], kind: str, max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """Each record with its tokenised responses under "items"; and how many responses were cut."""

    tokenized, cut = [], 0
    for record in records:
        items = [
            tokenize_prompt_response(tokenizer, record, response, max_length)
            for response in responses_best_first(record, kind)
        ]
        cut += sum(item["truncated"] for item in items)
        tokenized.append({**record, "items": items})
    return tokenized, cut


# ---------------------------------------------------------------------------
# Scoring, loss, metrics
# ---------------------------------------------------------------------------


def record_rewards(
    model: torch.nn.Module, records: list[dict[str, Any]], pad_token_id: int, dtype: str
) -> torch.Tensor:
    """(N, K_max) rewards of each record's responses, best first, from one forward over all of them.

    Slots beyond a record's K hold 0; the losses take num_responses and ignore them.
    """
    scores = score_items(
        model, [item for record in records for item in record["items"]], pad_token_id, dtype
    )  # (sum K_n,)
    return padded_rows(list(scores.split([len(record["items"]) for record in records])))


def padded_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """(N, K_max) from N rows of K_n rewards, zeros beyond each row's K_n."""
    width = max(len(row) for row in rows)
    return torch.stack([torch.cat([row, row.new_zeros(width - len(row))]) for row in rows])


def batch_loss_backward(
    model: torch.nn.Module,
    records: list[dict[str, Any]],
    loss_fn: Callable,
    pad_token_id: int,
    micro_batch_size: int,
    dtype: str,
) -> float:
    """Backward the mean loss over `records`, micro-batch by micro-batch (each weighted by its share); returns it."""
    total = 0.0
    for start in range(0, len(records), micro_batch_size):
        chunk = records[start : start + micro_batch_size]
        loss = loss_fn(record_rewards(model, chunk, pad_token_id, dtype), targets_of(chunk)).mean() * (
            len(chunk) / len(records)
        )
        loss.backward()
        total += loss.item()
    return total


def calibration_bins(prob_winner: torch.Tensor, num_bins: int = 10) -> list[dict[str, float]]:
    """Reliability of σ(r_a - r_b) as a classifier: confidence max(p, 1-p) in bins over [0.5, 1].

    prob_winner: (M,) predicted probability that the actual winner of each pair wins.
    Returns per non-empty bin {"confidence": mean confidence, "accuracy": share predicted right, "count"}.
    """
    confidence = torch.maximum(prob_winner, 1 - prob_winner)
    correct = (prob_winner > 0.5).float()
    index = ((confidence - 0.5) * 2 * num_bins).long().clamp(max=num_bins - 1)
    bins = []
    for b in range(num_bins):
        selected = index == b
        if selected.any():
            bins.append(
                {
                    "confidence": confidence[selected].mean().item(),
                    "accuracy": correct[selected].mean().item(),
                    "count": int(selected.sum()),
                }
            )
    return bins


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    """ECE = Σ_b (n_b / N) |accuracy_b - confidence_b|."""
    total = sum(b["count"] for b in bins)
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins)


@torch.no_grad()
def evaluate_pairs(
    model: torch.nn.Module,
    records: list[dict[str, Any]],
    kind: str,
    loss_fn: Callable,
    pad_token_id: int,
    batch_size: int,
    dtype: str,
) -> tuple[dict[str, float], list]:
    """Held-out loss, pair accuracy, mean margin r_w - r_l, ECE; and the calibration bins.

    `batch_size` counts sequences per forward pass here.
    """

    # All pairs of a prompt share its responses: score each distinct sequence once.
    sequences: list[dict[str, Any]] = []
    index_of_record: list[list[int]] = []  # per record, the sequence index of each of its responses
    position: dict[tuple[int, ...], int] = {}
    for record in records:
        index_of_record.append([])
        for item in record["items"]:
            key = tuple(item["input_ids"])
            if key not in position:
                position[key] = len(sequences)
                sequences.append(item)
            index_of_record[-1].append(position[key])
    scores = torch.cat(
        [
            score_items(model, sequences[s : s + batch_size], pad_token_id, dtype)
            for s in range(0, len(sequences), batch_size)
        ]
    )
    rewards = padded_rows(
        [scores[indices] for indices in index_of_record]
    )  # (N, K_max), as record_rewards lays them out
    winners, losers = [], []
    for row, record in enumerate(records):
        for winner, loser in preference_pairs(record, kind):
            winners.append(rewards[row, winner])
            losers.append(rewards[row, loser])
    chosen, rejected = torch.stack(winners), torch.stack(losers)
    bins = calibration_bins(torch.sigmoid(chosen - rejected))
    metrics = {
        "eval/loss": loss_fn(rewards, targets_of(records)).mean().item(),
        "eval/accuracy": preference_accuracy(chosen, rejected).item(),
        "eval/margin": (chosen - rejected).mean().item(),
        "eval/ece": expected_calibration_error(bins),
        "eval/pairs": len(winners),
    }
    return metrics, bins


def plot_reliability(bins: list[dict[str, float]], out_png: Path) -> None:
    fig, ax = new_figure(figsize=(4, 4))
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="reward model")
    ax.set_xlabel("confidence max(σ(Δr), 1 - σ(Δr))")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("reward model reliability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)


# ---------------------------------------------------------------------------
# Normalisation against the reference policy
# ---------------------------------------------------------------------------


def reference_statistics(
    model: torch.nn.Module, tokenizer: Any, prompts: list[dict[str, Any]], config: RMConfig
) -> dict[str, float]:
    """Mean and std of the (raw) reward of one reference-policy response per prompt."""

    normalize = config.normalize
    policy = load_causal_lm(normalize.policy or config.model.name, tokenizer).eval()
    scores = []
    torch.manual_seed(config.seed)
    for start in tqdm(
        range(0, len(prompts), normalize.batch_size), desc="rm: reference responses for normalisation", unit="batch"
    ):
        chunk = prompts[start : start + normalize.batch_size]
        responses = decode_responses(
            tokenizer,
            sample(
                policy,
                tokenizer,
                [format_prompt(tokenizer, r) for r in chunk],
                normalize.generation,
                config.model.dtype,
            ),
        )
        items = [
            tokenize_prompt_response(tokenizer, record, response, config.data.max_length)
            for record, response in zip(chunk, responses)
        ]
        with torch.no_grad():
            scores.append(score_items(model, items, tokenizer.pad_token_id, config.model.dtype))
    raw = torch.cat(scores)
    return {"mean": raw.mean().item(), "std": raw.std().item(), "num_responses": raw.numel()}


def unique_prompts(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to `limit` distinct prompts (as prompt records) in order of first appearance."""

    seen, prompts = set(), []
    for record in records:
        key = repr(prompt_messages(record))
        if key not in seen:
            seen.add(key)
            prompts.append(
                {"prompt": record["prompt"]} if "prompt" in record else {"messages": prompt_messages(record)}
            )
        if len(prompts) == limit:
            break
    return prompts


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


class RewardModelRun:
    """Reward-model training, validated at construction (before any output), trained by `train()`."""

    def __init__(self, config: RMConfig, resume: bool = False):
        self.config = config
        data = config.data
        if not data.train:
            raise UserError(
                "data.train is required: a file of comparisons, rankings or choices (e.g. OUT/comparisons.jsonl of `rlhfkit label`)"
            )
        self.out, self.checkpoint = resolve_out_dir(config.out, "rm", resume)
        self.kind = preference_kind(data.train)
        train = load_records(data.train, self.kind)
        # Held-out records may be of another preference kind (say noise-free comparisons to
        # measure a model trained on rankings): accuracy counts the pairs each record asserts,
        # and the held-out loss is that kind's own.
        self.eval_kind = preference_kind(data.eval) if data.eval else self.kind
        held_out = load_records(data.eval, self.eval_kind) if data.eval else None
        train, held_out = split_records(train, held_out, data.eval_fraction, data.train)
        self.loss_name = check_loss_fields(train, self.kind, data.train)
        self.loss_fn = preference_loss(self.loss_name)
        self.eval_loss_fn = preference_loss(check_loss_fields(held_out, self.eval_kind, data.eval or data.train))

        self.tokenizer = load_tokenizer(config.model.name)
        self.train_records, cut = tokenize_preferences(self.tokenizer, train, self.kind, data.max_length)
        self.eval_records, eval_cut = tokenize_preferences(self.tokenizer, held_out, self.eval_kind, data.max_length)
        if cut + eval_cut:
            print(
                f"rlhfkit rm: warning: {cut + eval_cut} response(s) longer than data.max_length={data.max_length} were cut at their end (no EOS)"
            )

        torch.manual_seed(config.seed)
        backbone = load_backbone(config.model.name, self.tokenizer)
        if config.model.lora.enabled:
            backbone = apply_lora(backbone, config.model.lora)
        self.model = ScalarHeadModel(backbone, pooling=config.pooling)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(self.params, config.optim, config.train.steps)
        self.step = 0

    def train_step(self) -> dict[str, float]:
        config = self.config
        records = [
            self.train_records[i]
            for i in batch_indices(len(self.train_records), config.train.batch_size, self.step, config.seed)
        ]
        self.model.train()
        loss = batch_loss_backward(
            self.model, records, self.loss_fn, self.tokenizer.pad_token_id, config.micro_batch_size, config.model.dtype
        )
        learning_rate = self.scheduler.get_last_lr()[0]
        grad_norm = optimizer_step(self.params, self.optimizer, self.scheduler, config.optim.max_grad_norm)
        self.step += 1
        return {"train/loss": loss, "train/grad_norm": grad_norm, "train/learning_rate": learning_rate}

    def evaluate(self) -> tuple[dict[str, float], list]:
        self.model.eval()
        sequences_per_pass = self.config.micro_batch_size * len(self.eval_records[0]["items"])
        return evaluate_pairs(
            self.model,
            self.eval_records,
            self.eval_kind,
            self.eval_loss_fn,
            self.tokenizer.pad_token_id,
            sequences_per_pass,
            self.config.model.dtype,
        )

    def save_final(self, directory: Path, extra: dict[str, Any]) -> None:
        """final/: the merged backbone, tokenizer, head and reward.json (gain, bias and the run's figures)."""

        model = self.model
        if hasattr(model.backbone, "merge_and_unload"):
            model = ScalarHeadModel(
                copy.deepcopy(model.backbone).merge_and_unload(),
                gain=model.gain,
                bias=model.bias,
                pooling=model.pooling,
            )
            model.head.load_state_dict(self.model.head.state_dict())
        model.save(directory, self.tokenizer, extra)

    def normalise(self) -> dict[str, Any]:
        """Set gain and bias from the reference policy's responses to the training prompts."""
        if not self.config.normalize.enabled:
            return {"normalized": False}
        prompts = unique_prompts(self.train_records, self.config.normalize.num_prompts)
        stats = reference_statistics(self.model.eval(), self.tokenizer, prompts, self.config)
        std = stats["std"] if stats["std"] > 1e-6 else 1.0
        self.model.gain, self.model.bias = 1.0 / std, -stats["mean"] / std
        return {
            "normalized": True,
            "reference_policy": self.config.normalize.policy or self.config.model.name,
            "reference_raw_mean": stats["mean"],
            "reference_raw_std": stats["std"],
            "reference_responses": stats["num_responses"],
        }

    def train(self) -> dict[str, Any]:
        config, out = self.config, self.out
        if self.checkpoint is not None:
            self.step = restore_training_state(self.checkpoint, self.model, self.optimizer, self.scheduler)["step"]
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        started = time.time()
        tracker = Tracker(out, config.train.steps, "rm", start_step=self.step)
        metrics: dict[str, float] = {}
        bins: list = []
        try:
            while self.step < config.train.steps:
                metrics = self.train_step()
                if self.step % config.train.eval_every == 0 or self.step == config.train.steps:
                    eval_metrics, bins = self.evaluate()
                    metrics.update(eval_metrics)
                tracker.log(self.step, metrics)
                if self.step % config.train.checkpoint_every == 0 or self.step == config.train.steps:
                    save_training_state(out, self.step, self.model, self.optimizer, self.scheduler)
        finally:
            tracker.close()
        if not bins:  # resumed at the last step: nothing trained, evaluate what was restored
            eval_metrics, bins = self.evaluate()
            metrics.update(eval_metrics)
        trained_s = time.time() - started
        normalization = self.normalise()
        figures = {
            "kind": self.kind,
            "loss_function": self.loss_name,
            "train_records": len(self.train_records),
            "eval_records": len(self.eval_records),
            **{
                key.replace("/", "_"): metrics[key]
                for key in ("eval/accuracy", "eval/margin", "eval/ece", "eval/loss", "eval/pairs")
            },
        }
        final = write_directory_atomic(
            out / "final", lambda tmp: self.save_final(tmp, {**normalization, "eval": figures})
        )
        plot_metrics(
            out / "metrics.jsonl", ["train/loss", "eval/accuracy", "eval/ece"], out / "training.png", "rlhfkit rm"
        )
        plot_reliability(bins, out / "reliability.png")
        summary = {
            **figures,
            **normalization,
            "gain": self.model.gain,
            "bias": self.model.bias,
            "steps": self.step,
            "train_s": trained_s,
            "wall_s": time.time() - started,
            "final": str(final),
        }
        write_json_atomic(out / "summary.json", summary)
        return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, RMConfig)


def run(args: argparse.Namespace) -> int:
    config = run_config(RMConfig, args)
    summary = RewardModelRun(config, resume=args.resume).train()
    print(
        f"rlhfkit rm: {summary['kind']} ({summary['loss_function']} loss), held-out accuracy {summary['eval_accuracy']:.3f} "
        f"on {summary['eval_pairs']} pairs, ECE {summary['eval_ece']:.3f}; reward model in {summary['final']}"
    )
    return 0
