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

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhfkit.algorithms import best_of_k_loss, bradley_terry_loss, ranking_loss, share_weight, soft_bradley_terry_loss
from rlhfkit.config import add_config_arguments
from rlhfkit.configs.reward import RMConfig
from rlhfkit.data import format_prompt, load_records
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
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
from rlhfkit.models import ScalarHeadModel, load_backbone, load_causal_lm, load_tokenizer
from rlhfkit.models.loading import ADAPTER_DIR
from rlhfkit.models.lora import apply_lora, exported, is_lora, save_reward_adapter
from rlhfkit.rewards.calibration import pair_statistics, plot_reliability, reward_normalisation
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.runtime import RunDirectory, Runtime, StepOutput, check_micro_batches, fit, run_config
from rlhfkit.training import (
    batch_indices,
    build_optimizer,
    load_training_state,
    optimizer_step,
    split_records,
    training_state,
)

# ---------------------------------------------------------------------------
# The loss (picked once), scoring, the batch's backward pass, the reference responses
# ---------------------------------------------------------------------------


def preference_loss(name: str) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """rewards (N, K_max) best-first + targets -> (N,) loss per record; picked once from the record kind."""
    losses = {
        "bradley_terry": lambda r, t: bradley_terry_loss(r[:, 0], r[:, 1], t["margin"]),
        "soft_bradley_terry": lambda r, t: soft_bradley_terry_loss(r[:, 0], r[:, 1], t["label"]),
        "ranking": lambda r, t: ranking_loss(r, t["num_responses"]),
        "best_of_k": lambda r, t: best_of_k_loss(r, t["best"], t["num_responses"]),
    }
    return losses[name]


def score_sequences(
    model: torch.nn.Module, items: list[dict[str, Any]], pad_token_id: int, runtime: Runtime
) -> torch.Tensor:
    """Tokenised prompt + response sequences (N of them), right-padded on the run's device -> (N,) fp32 rewards."""
    batch = runtime.to_device(pad_batch(items, pad_token_id))
    with runtime.autocast():
        return model(*batch).float()


def record_rewards(
    model: torch.nn.Module, records: list[dict[str, Any]], pad_token_id: int, runtime: Runtime
) -> torch.Tensor:
    """(N, K_max) rewards of each record's responses, best first, from one forward over all of them."""
    scores = score_sequences(model, [item for r in records for item in r["items"]], pad_token_id, runtime)
    return rows_by_record(list(scores.split([len(r["items"]) for r in records])))  # (Σ K_n,) -> (N, K_max)


def batch_loss_backward(
    model: torch.nn.Module,
    records: list[dict[str, Any]],
    loss_fn: Callable,
    pad_token_id: int,
    runtime: Runtime,
    micro_batch_size: int,
    total_records: int,
) -> float:
    """Backward the mean loss over this process's `records`, micro-batch by micro-batch; returns its share.

    Each micro-batch's mean is weighted by its share of the global batch's `total_records`
    (`share_weight`), so the gradient is that of the mean over the whole batch however it is split
    into micro-batches and processes; the returned shares sum over processes to the batch's loss.
    """
    loss_sum = 0.0
    for start in range(0, len(records), micro_batch_size):
        chunk = records[start : start + micro_batch_size]
        weight = share_weight(len(chunk), total_records, runtime.num_processes)
        rewards = record_rewards(model, chunk, pad_token_id, runtime)
        loss = loss_fn(rewards, runtime.to_device(preference_targets(chunk))).mean() * weight
        runtime.backward(loss)
        loss_sum += loss.item() / runtime.num_processes
    return loss_sum


@torch.no_grad()
def reference_scores(
    model: torch.nn.Module, tokenizer: Any, prompts: list[dict[str, Any]], config: RMConfig, runtime: Runtime
) -> torch.Tensor:
    """(M,) rewards of one reference-policy response per prompt, sampled on the run's seed (step 4)."""
    normalize = config.normalize
    policy = load_causal_lm(normalize.policy or config.model.name, tokenizer).eval().to(runtime.device)
    scores = []
    with runtime.forked_rng(config.seed):
        for start in tqdm(range(0, len(prompts), normalize.batch_size), desc="rm: reference responses", unit="batch"):
            chunk = prompts[start : start + normalize.batch_size]
            texts = [format_prompt(tokenizer, record) for record in chunk]
            samples = sample(policy, tokenizer, texts, normalize.generation, runtime.precision)
            items = [
                tokenize_prompt_response(tokenizer, record, response, config.data.max_length)
                for record, response in zip(chunk, decode_responses(tokenizer, samples))
            ]
            scores.append(score_sequences(model, items, tokenizer.pad_token_id, runtime))
    return torch.cat(scores)


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------


class RewardModelTrainer:
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
        model = ScalarHeadModel(backbone, pooling=config.pooling)
        optimizer, self.scheduler = build_optimizer(model.parameters(), config.optim, config.train.steps)
        self.model, self.optimizer = self.runtime.prepare(model, optimizer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.step, self.total_steps = 0, config.train.steps
        self.eval_every, self.checkpoint_every = config.train.eval_every, config.train.checkpoint_every
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

    @property
    def unwrapped(self) -> ScalarHeadModel:
        return self.runtime.unwrap(self.model)

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
        learning_rate = self.scheduler.get_last_lr()[0]
        grad_norm = optimizer_step(self.params, self.optimizer, self.scheduler, config.optim.max_grad_norm)
        self.step += 1
        loss = float(self.runtime.sum(torch.tensor(loss, device=self.runtime.device)))
        return {"train/loss": loss, "train/grad_norm": grad_norm, "train/learning_rate": learning_rate}, None

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

    def checkpoint_state(self) -> tuple[dict, dict[str, Any]]:
        return training_state(self.unwrapped, self.optimizer, self.scheduler)

    def load_checkpoint_state(self, tensors: dict, state: dict[str, Any]) -> None:
        load_training_state(tensors, state, self.unwrapped, self.optimizer, self.scheduler)

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

    def train(self, out: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
        """The Python API: the whole run into `out` (default: config.out); returns summary.json's figures."""
        return fit(self, RunDirectory.resolve(str(out or self.config.out), self.command, resume))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, RMConfig)


def run(args: argparse.Namespace) -> int:
    config = run_config(RMConfig, args)
    run_directory = RunDirectory.resolve(config.out, "rm", args.resume)  # before any model loads
    summary = fit(RewardModelTrainer(config), run_directory)
    if summary:
        print(
            f"rlhfkit rm: {summary['kind']} ({summary['loss_function']} loss), held-out accuracy "
            f"{summary['eval_accuracy']:.3f} on {summary['eval_pairs']} pairs, ECE {summary['eval_ece']:.3f}; "
            f"reward model in {summary['final']}"
        )
    return 0
