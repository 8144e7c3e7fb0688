"""An `rlhfkit rm` reward model in plain transformers: the class shipped beside its weights.

`ScalarHeadModel.save` copies this file into the reward model's directory as
`modeling_rlhfkit_reward.py` (the import below names the backbone's own
`<Arch>ForSequenceClassification`) and points config.json's `auto_map` at it, so that

    AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)

gives rlhfkit's scores exactly. The weights are the standard class's (`score.weight` is gain * w);
what the standard class cannot express comes from config.json:

    score_offset        added to every score: gain * (the head's bias) + rlhfkit's normalisation bias;
                        the standard class's `score` has no bias
    score_pooling       "last": the head at the last real token (the EOS after the response);
                        "mean": the head averaged over the response tokens and their EOS
    response_start_ids  the tokens the chat template puts before the answer; without a `response_mask`,
                        mean pooling takes the response to be what follows their last occurrence

Positions count real tokens only (as rlhfkit and `generate` do), so left padding scores as right padding.
rlhfkit reads its own pooling with the same functions. The file imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers import LlamaForSequenceClassification as StandardForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

STANDARD_IMPORT = "from transformers import LlamaForSequenceClassification as StandardForSequenceClassification"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B,): index of the last position where attention_mask is 1 (left or right padding)."""
    flipped_first = attention_mask.flip(-1).to(torch.long).argmax(-1)
    return attention_mask.shape[-1] - 1 - flipped_first


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, matching what `generate` uses."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pooled_scores(values: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None, pooling: str):
    """(B, T) head values -> (B,): at the last real token, or ("mean") averaged over `response_mask`."""
    if pooling == "mean":
        if response_mask is None:
            raise ValueError("a reward model with mean pooling needs the response_mask of its inputs")
        weights = response_mask.float()
        return (values * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)
    return values.gather(-1, last_token_index(attention_mask).unsqueeze(-1)).squeeze(-1)


def response_after(input_ids: torch.Tensor, attention_mask: torch.Tensor, marker: list[int]) -> torch.Tensor:
    """(B, T) -> (B, T) bool: the real tokens after the last occurrence of `marker` (the answer's start) per row."""
    width = len(marker)
    windows = input_ids.unfold(-1, width, 1)  # (B, T - width + 1, width)
    found = (windows == torch.tensor(marker, device=input_ids.device)).all(-1)
    starts = torch.arange(found.shape[-1], device=input_ids.device)
    last_found = torch.where(found, starts, -1).max(-1).values  # (B,)
    if (last_found < 0).any():
        raise ValueError(f"a row has no response start {marker}: pass response_mask (1 on the response and its EOS)")
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    return (positions >= (last_found + width).unsqueeze(-1)) & attention_mask.bool()


class RlhfkitRewardModel(StandardForSequenceClassification):
    """The standard sequence classifier, read as rlhfkit reads it: logits (B, 1) are rlhfkit's scores."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        backbone = getattr(self, self.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        values = self.score(hidden.last_hidden_state).squeeze(-1).float()  # (B, T)
        pooling = getattr(self.config, "score_pooling", "last")
        marker = getattr(self.config, "response_start_ids", None)
        if pooling == "mean" and response_mask is None and marker:
            response_mask = response_after(input_ids, attention_mask, marker)
        scores = pooled_scores(values, attention_mask, response_mask, pooling)
        return SequenceClassifierOutputWithPast(logits=(scores + getattr(self.config, "score_offset", 0.0))[:, None])
