"""Training on preferences: reward-model scores of preference records and their loss; DPO's pair log-probs.

- `preference_loss(name)`: the reward-model loss of a record kind (Bradley-Terry, soft Bradley-Terry,
  InstructGPT's K-way ranking, best-of-K), on the (N, K_max) rewards of N records, best first.
- `record_rewards` / `batch_loss_backward`: one forward over all responses of a micro-batch of records,
  and the batch's mean loss backwarded micro-batch by micro-batch; `reference_scores`: the rewards of a
  reference policy's responses, which set the trained model's gain and bias.
- `pair_logprobs` / `reference_logprobs`: DPO's summed response log-probs of (chosen, rejected) pairs,
  in one forward of 2N rows; the reference's computed once, under the base with a LoRA adapter off.
- `load_pairs`, `LOSSES` (train.loss -> its function), `statistic_sums`: DPO's data, loss and figures.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rlhfkit.algorithms import (
    best_of_k_loss,
    bradley_terry_loss,
    conservative_dpo_loss,
    dpo_loss,
    ipo_loss,
    ranking_loss,
    soft_bradley_terry_loss,
)
from rlhfkit.configs.dpo import DPODataConfig, DPOTrainConfig
from rlhfkit.configs.reward import RMConfig
from rlhfkit.data import format_prompt, load_records
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.data.preferences import preference_targets, rows_by_record
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm
from rlhfkit.models.lora import is_lora
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.runtime import Runtime
from rlhfkit.training import split_records
from rlhfkit.training.logprobs import sequence_logprobs
from rlhfkit.training.trainer import backward_in_micro_batches

Pair = tuple[dict, dict]  # (chosen, rejected): each a tokenised prompt + response + EOS


def preference_loss(name: str) -> Callable[[Tensor, dict[str, Tensor]], Tensor]:
    """rewards (N, K_max) best-first + targets -> (N,) loss per record; picked once from the record kind."""
    losses = {
        "bradley_terry": lambda r, t: bradley_terry_loss(r[:, 0], r[:, 1], t["margin"]),
        "soft_bradley_terry": lambda r, t: soft_bradley_terry_loss(r[:, 0], r[:, 1], t["label"]),
        "ranking": lambda r, t: ranking_loss(r, t["num_responses"]),
        "best_of_k": lambda r, t: best_of_k_loss(r, t["best"], t["num_responses"]),
    }
    return losses[name]


def score_sequences(model: nn.Module, items: list[dict[str, Any]], pad_token_id: int, runtime: Runtime) -> Tensor:
    """Tokenised prompt + response sequences (N of them), right-padded on the run's device -> (N,) fp32 rewards."""
    batch = runtime.to_device(pad_batch(items, pad_token_id))
    with runtime.autocast():
        return model(*batch).float()


def record_rewards(model: nn.Module, records: list[dict[str, Any]], pad_token_id: int, runtime: Runtime) -> Tensor:
    """(N, K_max) rewards of each record's responses, best first, from one forward over all of them."""
    scores = score_sequences(model, [item for r in records for item in r["items"]], pad_token_id, runtime)
    return rows_by_record(list(scores.split([len(r["items"]) for r in records])))  # (Σ K_n,) -> (N, K_max)


def batch_loss_backward(
    model: nn.Module,
    records: list[dict[str, Any]],
    loss_fn: Callable,
    pad_token_id: int,
    runtime: Runtime,
    micro_batch_size: int,
    total_records: int,
) -> float:
    """Backward the mean `loss_fn` over this process's `records`, a share of a batch of `total_records` records.

    Returns this process's share of the batch's loss (`backward_in_micro_batches`).
    """

    def loss_of(chunk: list[dict[str, Any]]) -> Tensor:
        rewards = record_rewards(model, chunk, pad_token_id, runtime)
        return loss_fn(rewards, runtime.to_device(preference_targets(chunk))).mean()

    return backward_in_micro_batches(model, records, micro_batch_size, runtime, loss_of, len, total_records)


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


def pair_logprobs(model: nn.Module, pairs: list[Pair], pad_id: int, runtime: Runtime) -> Tensor:
    """(N, 2) summed response log-probs of each pair's (chosen, rejected) response, in one forward of 2N rows."""
    items = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    batch = runtime.to_device(pad_batch(items, pad_id))
    return sequence_logprobs(model, *batch, dtype=runtime.precision).view(2, -1).T  # (2N,) -> (N, 2)


def reference_mode(model: Any) -> contextlib.AbstractContextManager:
    """Where `model` is the reference: with LoRA, the base with the adapter disabled; else the model as it is."""
    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


@torch.no_grad()
def reference_logprobs(model: nn.Module, pairs: list[Pair], pad_id: int, batch_size: int, runtime: Runtime) -> Tensor:
    """(N, 2) log π_ref of every pair's (chosen, rejected) response; with LoRA, under the base (adapter off)."""
    model.eval()
    with reference_mode(model):
        chunks = [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]
        return torch.cat([pair_logprobs(model, chunk, pad_id, runtime) for chunk in chunks])


# averaged over pairs: loss, r_w > r_l, r_w - r_l, implicit rewards r = β (log π - log π_ref), log π(y_w), log π(y_l)
STATISTICS = "loss reward_accuracy reward_margin reward_chosen reward_rejected logp_chosen logp_rejected".split()
# (policy_chosen, policy_rejected, ref_chosen, ref_rejected) (N,) each -> (losses, chosen_rewards, rejected_rewards)
PreferenceLoss = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
# train.loss -> its function with the coefficients bound
LOSSES: dict[str, Callable[[DPOTrainConfig], PreferenceLoss]] = {
    "dpo": lambda c: functools.partial(dpo_loss, beta=c.beta),
    "ipo": lambda c: functools.partial(ipo_loss, tau=c.beta),
    "conservative": lambda c: functools.partial(conservative_dpo_loss, beta=c.beta, label_smoothing=c.label_smoothing),
}


def load_pairs(config: DPODataConfig, tokenizer: Any) -> dict[str, list[Pair]]:
    """Tokenised "train" and "eval" pairs; eval is data.eval or the last data.eval_fraction of data.train."""
    if not config.train:
        raise UserError("data.train is required: comparisons (prompt, chosen, rejected), e.g. from `rlhfkit label`")
    train = load_records(config.train, "comparisons")
    held_out = load_records(config.eval, "comparisons") if config.eval else None
    train, held_out = split_records(train, held_out, config.eval_fraction, config.train)
    soft = sum(0 < r.get("label", 1) < 1 for r in train)
    if soft:
        print(f"rlhfkit dpo: warning: {soft} comparison(s) carry a soft 'label'; DPO uses only which is chosen")
    item = functools.partial(tokenize_prompt_response, tokenizer, max_length=config.max_length)
    pairs = {
        split: [(item(r, r["chosen"]), item(r, r["rejected"])) for r in records]
        for split, records in (("train", train), ("eval", held_out))
    }
    truncated = sum(item["truncated"] for split in pairs.values() for pair in split for item in pair)
    if truncated:
        print(f"rlhfkit dpo: warning: {truncated} response(s) over data.max_length={config.max_length} were cut")
    return pairs


def statistic_sums(policy: Tensor, losses: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """(7,) sums over the pairs of STATISTICS: sums add up across micro-batches and processes, means would not."""
    margins = chosen_rewards - rejected_rewards
    rows = [losses, (margins > 0).float(), margins, chosen_rewards, rejected_rewards, *policy.unbind(1)]
    return torch.stack(rows, dim=1).detach().sum(0)
