"""The log-likelihood of response tokens under a causal LM: the SFT loss, DPO's policy terms, PPO-ptx.

Apart from `rlhfkit.training` so that what imports the optimiser, the schedule and the checkpoint state
(Gym included) does not import transformers with the model helpers.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.algorithms import logprobs_from_logits, masked_mean
from rlhfkit.models import position_ids_from_mask
from rlhfkit.runtime.precision import autocast


def response_token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    dtype: str = "float32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every next token and where it is a response token.

    input_ids, attention_mask, response_mask: (B, T). Logits at position t
    predict token t + 1, so both outputs are (B, T - 1): logprobs[:, t] =
    log p(input_ids[:, t + 1] | input_ids[:, :t + 1]) (fp32), and
    mask[:, t] = response_mask[:, t + 1].
    """
    with autocast(dtype):
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).logits
    logprobs = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])  # (B, T-1)
    return logprobs, response_mask[:, 1:].bool()


def sequence_logprobs(model: nn.Module, *batch: torch.Tensor, dtype: str = "float32") -> torch.Tensor:
    """(input_ids, attention_mask, response_mask), each (B, T) -> (B,) summed log-probs of each row's response
    tokens (EOS included), fp32."""
    logprobs, mask = response_token_logprobs(model, *batch, dtype=dtype)
    return torch.where(mask, logprobs, 0.0).sum(-1)


def response_token_nll(model: nn.Module, *batch: torch.Tensor, dtype: str = "float32") -> torch.Tensor:
    """(input_ids, attention_mask, response_mask), each (B, T) -> 0-dim mean negative log-likelihood over all
    response tokens of the batch (the SFT loss)."""
    logprobs, mask = response_token_logprobs(model, *batch, dtype=dtype)
    return -masked_mean(logprobs, mask)
