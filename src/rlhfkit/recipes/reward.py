"""`rlhfkit rm`: a reward model from comparisons, K-way rankings or best-of-K choices.

A reward model is a language-model backbone with a scalar head read at the last real token
(the EOS after the response), `rlhfkit.models.ScalarHeadModel`.

    1 load       preference records; their kind picks the loss once:
                   comparisons            -log σ(r_w - r_l [- margin])        (Stiennon et al. 2020)
                   comparisons + "label"  soft Bradley-Terry cross-entropy      (AI feedback)
                   rankings               all C(K,2) pairs of a prompt, weight 1/C(K,2), in one batch (InstructGPT)
                   choices                softmax cross-entropy over the K rewards (Ziegler et al. 2019)
    2 train      AdamW, full or LoRA, from any causal LM or an `rlhfkit sft` final/
    3 evaluate   held-out pair accuracy, mean margin, calibration of σ(r_w - r_l) (ECE, reliability plot),
                 before the first step and every train.eval_every steps
    4 normalise  sample responses of the reference policy to the training prompts and set gain and bias
                 so that they score mean 0, std 1 (Stiennon et al.; Ziegler et al.); stored in reward.json
    5 save       final/: the model as `ScalarHeadModel.save` writes it (LoRA merged), with reward.json holding
                 gain, bias and the held-out figures: the reward source of
                 `rlhfkit ppo --set reward.kind=model reward.model=DIR/final` and its critic's start

Where this departs from a naive implementation, and why:
- The batch loss is the mean over records (a ranking counts once, as in InstructGPT), however the
  batch is split into micro-batches and processes (each micro-batch's mean is weighted by its
  share of the batch's records), so train.micro_batch_size and N processes change memory, not the update.
- Sequences are prompt + response + EOS, right-padded; the head is read at the last real token,
  so a response is always judged with its EOS, as `rlhfkit ppo` scores it.
- Normalisation runs as final/ is written: checkpoints hold the raw model (gain 1, bias 0), and
  the reference responses are sampled on their own seed, so a resumed run normalises identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlhfkit.configs.reward import RMConfig
from rlhfkit.data import load_records
from rlhfkit.data.preferences import (
    asserted_pairs,
    distinct_sequences,
    preference_kind,
    preference_loss_name,
    preference_targets,
    rows_by_record,
    tokenize_preferences,
    unique_prompts,
)
from rlhfkit.errors import UserError
from rlhfkit.models import ScalarHeadModel, load_backbone, load_tokenizer
from rlhfkit.models.loading import ADAPTER_DIR
from rlhfkit.models.lora import apply_lora, exported, is_lora, save_reward_adapter
from rlhfkit.rewards.calibration import pair_statistics, plot_reliability, reward_normalisation
from rlhfkit.runtime import Runtime, StepOutput, check_micro_batches
from rlhfkit.training import batch_indices, split_records
from rlhfkit.training.preferences import batch_loss_backward, preference_loss, reference_scores, score_sequences
from rlhfkit.training.trainer import OptimizerTrainer, trainer_command

# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------


class RewardModelTrainer(OptimizerTrainer):
    """Reward-model training, validated at construction (before any output); `rlhfkit.runtime.fit` runs it."""

    command = "rm"
    plot_keys = ("train/loss", "eval/accuracy", "eval/ece")

    def __init__(self, config: RMConfig, runtime: Runtime | None = None):
        self.config = config
        self.runtime = runtime or Runtime(config.model.dtype, config.seed)
        check_micro_batches(config.train.batch_size, config.train.micro_batch, self.runtime.num_processes)
        self.tokenizer = load_tokenizer(config.model.name)
        self.load_preferences()
        backbone = load_backbone(config.model.name, self.tokenizer)
        self.runtime.settle_precision(config.model, backbone)
        backbone = apply_lora(backbone, config.model.lora) if config.model.lora.enabled else backbone
        self.prepare_training(ScalarHeadModel(backbone, pooling=config.pooling))
        self.evaluation: tuple[int, dict[str, float], list] | None = None  # step, metrics, calibration bins
        self.normalization: dict[str, Any] = {}

    def load_preferences(self) -> None:
        """Step 1: records, their kind and loss, tokenised; held-out records may be of another kind.

        (Say noise-free comparisons measuring a model trained on rankings: accuracy counts the pairs
        each record asserts, and the held-out loss is that kind's own.)
        """
        data = self.config.data
        if not data.train:
            raise UserError(
                "data.train is required: a file of comparisons, rankings or choices "
                "(e.g. OUT/comparisons.jsonl of `rlhfkit label`)"
            )
        self.kind = preference_kind(data.train)
        self.eval_kind = preference_kind(data.eval) if data.eval else self.kind
        held_out = load_records(data.eval, self.eval_kind) if data.eval else None
        train, held_out = split_records(load_records(data.train, self.kind), held_out, data.eval_fraction, data.train)
        self.loss_name = preference_loss_name(train, self.kind, data.train)
        self.loss_fn = preference_loss(self.loss_name)
        self.eval_loss_fn = preference_loss(preference_loss_name(held_out, self.eval_kind, data.eval or data.train))
        self.train_records, cut = tokenize_preferences(self.tokenizer, train, self.kind, data.max_length)
        self.eval_records, eval_cut = tokenize_preferences(self.tokenizer, held_out, self.eval_kind, data.max_length)
        if cut + eval_cut and self.runtime.is_main:
            print(
                f"rlhfkit rm: warning: {cut + eval_cut} response(s) longer than data.max_length={data.max_length} "
                "were cut at their end (no EOS)"
            )

    def train_step(self) -> StepOutput:
        """Step 2: every process draws the same global batch of records and backwards its share of the mean loss."""
        config = self.config
        indices = batch_indices(len(self.train_records), config.train.batch_size, self.step, config.seed)
        local = self.runtime.shard([self.train_records[i] for i in indices])
        self.model.train()
        pad = self.tokenizer.pad_token_id
        loss = batch_loss_backward(
            self.model, local, self.loss_fn, pad, self.runtime, config.train.micro_batch, config.train.batch_size
        )
        loss = float(self.runtime.sum(torch.tensor(loss, device=self.runtime.device)))
        return self.optimizer_metrics({"train/loss": loss}), None

    @torch.no_grad()
    def evaluate(self) -> StepOutput:
        """Step 3: held-out loss, pair accuracy, mean margin and ECE; each distinct sequence scored once."""
        model, pad = self.unwrapped.eval(), self.tokenizer.pad_token_id
        sequences, indices = distinct_sequences(self.eval_records)
        per_pass = self.config.train.micro_batch * len(self.eval_records[0]["items"])
        passes = [sequences[start : start + per_pass] for start in range(0, len(sequences), per_pass)]
        scores = torch.cat([score_sequences(model, chunk, pad, self.runtime) for chunk in passes])
        rewards = rows_by_record([scores[i] for i in indices])  # (N, K_max), as record_rewards lays them out
        statistics, bins = pair_statistics(*asserted_pairs(rewards, self.eval_records, self.eval_kind))
        targets = self.runtime.to_device(preference_targets(self.eval_records))
        metrics = {"eval/loss": self.eval_loss_fn(rewards, targets).mean().item()}
        metrics.update({f"eval/{key}": value for key, value in statistics.items()})
        self.evaluation = (self.step, metrics, bins)
        return metrics, None

    def normalise(self) -> dict[str, Any]:
        """Step 4: gain and bias so that the reference policy's responses to the training prompts score N(0, 1)."""
        normalize, model = self.config.normalize, self.unwrapped.eval()
        if not normalize.enabled:
            return {"normalized": False}
        prompts = unique_prompts(self.train_records, normalize.num_prompts)
        scale = reward_normalisation(reference_scores(model, self.tokenizer, prompts, self.config, self.runtime))
        model.gain, model.bias = scale.pop("gain"), scale.pop("bias")
        return {"normalized": True, "reference_policy": normalize.policy or self.config.model.name, **scale}

    def save_final(self, directory: Path) -> None:
        """Step 5: the model with LoRA merged into a copy of the backbone, its tokenizer, gain, bias and figures."""
        if self.evaluation is None or self.evaluation[0] != self.step:  # resumed at the last step: nothing evaluated
            self.evaluate()
        self.normalization = self.normalise()
        model = self.unwrapped
        backbone = exported(model.backbone, self.config.model.dtype)  # bf16 when trained in bf16
        final = ScalarHeadModel(backbone, gain=model.gain, bias=model.bias, pooling=model.pooling)
        final.head.load_state_dict(model.head.state_dict())
        final.to(backbone.dtype).save(directory, self.tokenizer, {**self.normalization, "eval": self.figures()})
        if is_lora(model.backbone):
            score = model.gain * model.head.weight
            save_reward_adapter(model.backbone, score, self.tokenizer, directory / ADAPTER_DIR)

    def figures(self) -> dict[str, Any]:
        """What was trained on, and the held-out figures of the last evaluation (eval_accuracy, eval_ece, ...)."""
        _, metrics, _ = self.evaluation
        return {
            "kind": self.kind,
            "loss_function": self.loss_name,
            "train_records": len(self.train_records),
            "eval_records": len(self.eval_records),
            **{key.replace("/", "_"): value for key, value in metrics.items()},
        }

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
        plot_reliability(self.evaluation[2], out / "reliability.png")
        model = self.unwrapped
        return {**self.figures(), **self.normalization, "gain": model.gain, "bias": model.bias}


add_arguments, run = trainer_command(RewardModelTrainer, RMConfig, lambda summary: (
    f"{summary['kind']} ({summary['loss_function']} loss), held-out accuracy {summary['eval_accuracy']:.3f} "
    f"on {summary['eval_pairs']} pairs, ECE {summary['eval_ece']:.3f}; reward model in {summary['final']}"
))  # fmt: skip
