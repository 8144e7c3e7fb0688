"""Training on preferences: reward-model scores of preference records and their loss; DPO's pair log-probs.

- `preference_loss(name)`: the reward-model loss of a record kind (Bradley-Terry, soft Bradley-Terry,
  InstructGPT's K-way ranking, best-of-K), on the (N, K_max) rewards of N records, best first.
- `record_rewards` / `batch_loss_backward`: one forward over all responses of a micro-batch of records,
  and the batch's mean loss backwarded micro-batch by micro-batch.
- `pair_logprobs` / `reference_logprobs`: DPO's summed response log-probs of (chosen, rejected) pairs,
  in one forward of 2N rows; the reference's computed once, under the base with a LoRA adapter off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rlhfkit.algorithms import best_of_k_loss, bradley_terry_loss, ranking_loss, soft_bradley_terry_loss
from rlhfkit.data.collate import pad_batch
from rlhfkit.data.preferences import preference_targets, rows_by_record
from rlhfkit.models.lora import is_lora
from rlhfkit.runtime import Runtime
from rlhfkit.training import sequence_logprobs
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
