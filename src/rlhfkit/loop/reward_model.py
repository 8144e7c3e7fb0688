"""One round's reward model: an ensemble of heads (`models.ensemble`) fitted to every comparison so far.

    1 train      Bradley-Terry (soft labels: its cross-entropy) per head, each comparison weighted for
                 head e by its bootstrap weight (`selection.bootstrap_weights`); mean over records and heads
    2 evaluate   held-out pair accuracy, margin and ECE of the ensemble's mean; accuracy of each head
    3 normalise  gain and bias so that the policy's responses of this round score mean 0, std 1 under the
                 mean (Ziegler et al. 2019 normalise on the current policy's samples)
    4 save       final/: the mean head as an ordinary reward model, the heads beside it, and reward.json with
                 `spread_range`: the [min, max] spread over the training responses (the range the
                 reward-hacking monitor compares the policy's spread with)

It runs in one process under `rlhfkit.runtime.fit`, like every trainer (checkpoints, resume, final/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algorithms.aggregation import share_weight
from rlhfkit.configs.loop import EnsembleRMConfig
from rlhfkit.data import load_records
from rlhfkit.data.collate import pad_batch
from rlhfkit.data.preferences import asserted_pairs, preference_loss_name, preference_targets, tokenize_preferences
from rlhfkit.loop.selection import bootstrap_weights
from rlhfkit.models import load_backbone, load_tokenizer
from rlhfkit.models.ensemble import EnsembleRewardModel
from rlhfkit.models.lora import apply_lora, exported
from rlhfkit.rewards.calibration import pair_statistics, reward_normalisation
from rlhfkit.rewards.ensemble import ensemble_head_scores, spread
from rlhfkit.runtime import Runtime, StepOutput
from rlhfkit.training import (
    batch_indices,
    build_optimizer,
    load_training_state,
    optimizer_step,
    training_state,
)
from rlhfkit.training.preferences import preference_loss


def record_key(record: dict[str, Any]) -> str:
    """A comparison's identity for its bootstrap weights: its prompt and both texts."""
    prompt = record.get("prompt", record.get("messages"))
    return json.dumps([prompt, record["chosen"], record["rejected"]], sort_keys=True, ensure_ascii=False)


class EnsembleRewardTrainer:
    """The reward-model ensemble of one round; `rlhfkit.runtime.fit` runs it."""

    command = "rm"
    plot_keys = ("train/loss", "eval/accuracy")

    def __init__(self, config: EnsembleRMConfig, normalise_on: tuple[list[dict[str, Any]], list[str]]):
        self.config, settings = config, config.rm
        self.runtime = Runtime(config.model.dtype)  # its own Accelerator: nothing of this round outlives it
        self.tokenizer = load_tokenizer(config.model.name)
        train = load_records(config.train, "comparisons")
        self.loss_fn = preference_loss(preference_loss_name(train, "comparisons", config.train))
        self.train_records, _ = tokenize_preferences(self.tokenizer, train, "comparisons", config.max_length)
        held_out = load_records(config.eval, "comparisons")
        self.eval_records, _ = tokenize_preferences(self.tokenizer, held_out, "comparisons", config.max_length)
        self.weights = bootstrap_weights([record_key(r) for r in train], settings.ensemble_size, config.seed)
        self.normalise_on = normalise_on
        backbone = load_backbone(config.model.name, self.tokenizer)
        backbone = apply_lora(backbone, settings.lora) if settings.lora.enabled else backbone
        model = EnsembleRewardModel(backbone, settings.ensemble_size, pooling=settings.pooling)
        optimizer, self.scheduler = build_optimizer(model.parameters(), settings.optim, settings.train.steps)
        self.model, self.optimizer = self.runtime.prepare(model, optimizer)
        self.step, self.total_steps = 0, settings.train.steps
        self.eval_every, self.checkpoint_every = settings.train.eval_every, settings.train.checkpoint_every
        self.figures: dict[str, float] = {}
        self.extra: dict[str, Any] = {}

    def head_scores(self, records: list[dict[str, Any]]) -> torch.Tensor:
        """(N, 2, E) scores of each comparison's chosen and rejected response under every head."""
        items = [item for record in records for item in record["items"]]
        batch = self.runtime.to_device(pad_batch(items, self.tokenizer.pad_token_id))
        with self.runtime.autocast():
            scores = self.model.head_scores(*batch).float()
        return scores.reshape(len(records), 2, -1)

    def train_step(self) -> StepOutput:
        """Step 1: the batch's loss, each head on its own bootstrap weights of the comparisons, accumulated over
        micro-batches of `rm.train.micro_batch_size` records (each micro-batch's mean weighted by its share)."""
        schedule = self.config.rm.train
        indices = batch_indices(len(self.train_records), schedule.batch_size, self.step, self.config.seed)
        self.model.train()
        loss = 0.0
        for start in range(0, len(indices), schedule.micro_batch):
            micro = indices[start : start + schedule.micro_batch]
            records = [self.train_records[i] for i in micro]
            scores = self.head_scores(records)  # (n, 2, E)
            targets = self.runtime.to_device(preference_targets(records))
            per_head = torch.stack([self.loss_fn(scores[..., e], targets) for e in range(scores.shape[-1])], -1)
            weights = self.runtime.to_device(self.weights[micro])  # (n, E)
            part = (per_head * weights).mean() * share_weight(len(micro), len(indices))
            self.runtime.backward(part)
            loss += part.item()
        learning_rate = self.scheduler.get_last_lr()[0]
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = optimizer_step(params, self.optimizer, self.scheduler, self.config.rm.optim.max_grad_norm)
        self.step += 1
        return {"train/loss": loss, "train/grad_norm": grad_norm, "train/learning_rate": learning_rate}, None

    @torch.no_grad()
    def evaluate(self) -> StepOutput:
        """Step 2: the ensemble mean's held-out accuracy, margin and ECE; each head's accuracy."""
        self.model.eval()
        scores = torch.cat(
            [self.head_scores(self.eval_records[i : i + 16]) for i in range(0, len(self.eval_records), 16)]
        )
        statistics, _ = pair_statistics(*asserted_pairs(scores.mean(-1), self.eval_records, "comparisons"))
        heads = [
            pair_statistics(*asserted_pairs(scores[..., e], self.eval_records, "comparisons"))[0]["accuracy"]
            for e in range(scores.shape[-1])
        ]
        metrics = {f"eval/{key}": value for key, value in statistics.items()}
        metrics["eval/head_accuracy_mean"] = sum(heads) / len(heads)
        self.figures = metrics
        return metrics, None

    def normalise_and_spread(self) -> dict[str, Any]:
        """Steps 3 and 4's figures: gain and bias on this round's responses, and the spread range on the labels."""
        model = self.runtime.unwrap(self.model)
        records, responses = self.normalise_on
        raw = ensemble_head_scores(model, self.tokenizer, records, responses, 16, self.runtime.precision)
        scale = reward_normalisation(raw.mean(-1))
        model.gain, model.bias = scale.pop("gain"), scale.pop("bias")
        labelled = [(r, text) for r in self.train_records for text in (r["chosen"], r["rejected"])]
        heads = ensemble_head_scores(
            model, self.tokenizer, [r for r, _ in labelled], [t for _, t in labelled], 16, self.runtime.precision
        )
        spreads = spread(heads)
        return {**scale, "spread_range": [spreads.min().item(), spreads.max().item()]}

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        return training_state(self.runtime.unwrap(self.model), self.optimizer, self.scheduler)

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        load_training_state(tensors, state, self.runtime.unwrap(self.model), self.optimizer, self.scheduler)

    def save_final(self, directory: Path) -> None:
        """Steps 3-4: normalised, LoRA merged into a copy of the backbone, mean head + heads + reward.json."""
        if not self.figures:
            self.evaluate()
        self.extra = self.normalise_and_spread()
        model = self.runtime.unwrap(self.model)
        final = EnsembleRewardModel(
            exported(model.backbone, self.runtime.precision), model.ensemble_size, model.gain, model.bias, model.pooling
        )
        final.heads.load_state_dict(model.heads.state_dict())
        eval_figures = {key.replace("/", "_"): value for key, value in self.figures.items()}
        final.save(directory, self.tokenizer, {**self.extra, "eval": eval_figures})

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        figures = {key.replace("/", "_"): value for key, value in self.figures.items()}
        return {"train_records": len(self.train_records), **figures, **self.extra}
