"""The reward of an ensemble of reward heads (`models.ensemble`), and its spread: the reward model's uncertainty.

    reward(x, y) = mean_e r_e(x, y)          what PPO maximises
    spread(x, y) = std_e r_e(x, y)           how much the heads disagree (population std, in reward units)

The spread on the policy's samples is logged as `reward/spread`; where it leaves the range seen on
the reward model's own training responses (reward.json's `spread_range`), the policy has moved to
text the reward model knows nothing about.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.models.ensemble import EnsembleRewardModel
from rlhfkit.runtime.precision import autocast


def spread(head_scores: torch.Tensor) -> torch.Tensor:
    """(N, E) scores of E heads -> (N,) their population standard deviation (0 for one head)."""
    return head_scores.std(dim=-1, correction=0)


@torch.no_grad()
def ensemble_head_scores(
    model: EnsembleRewardModel,
    tokenizer: Any,
    records: list[dict[str, Any]],
    responses: list[str],
    batch_size: int,
    dtype: str,
) -> torch.Tensor:
    """(N, E) fp32 scores of every head for prompt record i + response i (+ EOS), tokenised as in training."""
    max_length = model.backbone.config.max_position_embeddings
    items = [tokenize_prompt_response(tokenizer, r, response, max_length) for r, response in zip(records, responses)]
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for start in range(0, len(items), batch_size):
        batch = [t.to(device) for t in pad_batch(items[start : start + batch_size], tokenizer.pad_token_id)]
        with autocast(dtype):
            chunks.append(model.head_scores(*batch).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.ensemble_size)


class EnsembleReward:
    """A reward source `(prompts, responses, records) -> scores`: the ensemble's mean.

    The spread of its last call stays in `last_spread` (one value per response) for the caller
    to log. `model` may be replaced between calls: the online loop retrains it every round.
    """

    def __init__(self, model: EnsembleRewardModel, tokenizer: Any, batch_size: int = 16, dtype: str = "float32"):
        self.model, self.tokenizer, self.batch_size, self.dtype = model, tokenizer, batch_size, dtype
        self.last_spread: list[float] = []

    def __call__(self, prompts: list[str], responses: list[str], records: list[dict[str, Any]]) -> list[float]:
        scores = ensemble_head_scores(self.model, self.tokenizer, records, responses, self.batch_size, self.dtype)
        self.last_spread = spread(scores).tolist()
        return scores.mean(-1).tolist()
