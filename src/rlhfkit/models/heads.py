"""Scalar heads: the value head on a policy, and the reward model / separate critic.

A reward model is a transformer backbone with one linear head, read at the
last real token of each sequence (pooling "last", as InstructGPT) or averaged
over the response tokens (pooling "mean"); a separate critic is the same module
read at every token. The reward model's `final/` directory holds:

    config.json, model.safetensors, tokenizer files   the backbone (save_pretrained)
    scalar_head.safetensors                           the head's weight and bias
    reward.json                                       {"gain", "bias", "pooling", ...}: score = gain * head + bias
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlhfkit.errors import UserError
from rlhfkit.models.loading import load_backbone

HEAD_FILE = "scalar_head.safetensors"
REWARD_FILE = "reward.json"


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the policy's last hidden states; zero-initialised so early values are 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T) in fp32."""
        return self.linear(hidden_states.float()).squeeze(-1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B,): index of the last position where attention_mask is 1 (left or right padding)."""
    flipped_first = attention_mask.flip(-1).to(torch.long).argmax(-1)
    return attention_mask.shape[-1] - 1 - flipped_first


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, matching what `generate` uses."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


POOLINGS = ("last", "mean")


def check_pooling(value: str, key: str = "pooling") -> str:
    if value not in POOLINGS:
        raise UserError(f"{key} must be one of {', '.join(POOLINGS)}, got {value!r}")
    return value


class ScalarHeadModel(nn.Module):
    """A transformer backbone (no LM head) with a scalar head: a reward model or a separate critic."""

    def __init__(self, backbone: nn.Module, gain: float = 1.0, bias: float = 0.0, pooling: str = "last"):
        super().__init__()
        self.pooling = check_pooling(pooling)
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        self.gain = gain
        self.bias = bias

    def token_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T) raw head outputs at every position, fp32."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state
        return self.head(hidden.float()).squeeze(-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) -> (B,) normalised score gain * head + bias, the head read as `pooling` says.

        "mean" averages the head over the response tokens (`response_mask`, EOS included); the head
        being linear, that is the head of the mean hidden state. A judge that adds up what each
        word contributes (a sentiment lexicon, say) is then linear in the features; read at the last
        token, the backbone must first learn to carry that sum there.
        """
        values = self.token_values(input_ids, attention_mask)
        if self.pooling == "mean":
            if response_mask is None:
                raise ValueError("a reward model with mean pooling needs the response_mask of its inputs")
            weights = response_mask.float()
            raw = (values * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)
        else:
            raw = values.gather(-1, last_token_index(attention_mask).unsqueeze(-1)).squeeze(-1)
        return self.gain * raw + self.bias

    def save(self, directory: str | Path, tokenizer=None, extra: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone
        if hasattr(backbone, "merge_and_unload"):
            backbone = backbone.merge_and_unload()
        backbone.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(directory / HEAD_FILE))
        (directory / REWARD_FILE).write_text(
            json.dumps({"gain": self.gain, "bias": self.bias, "pooling": self.pooling, **(extra or {})}, indent=2)
        )

    @classmethod
    def load(cls, directory: str | Path) -> ScalarHeadModel:
        directory = Path(directory)
        if not (directory / HEAD_FILE).is_file() or not (directory / REWARD_FILE).is_file():
            raise UserError(
                f"{directory} is not a reward model directory: expected {HEAD_FILE} and {REWARD_FILE} (the final/ of an `rlhfkit rm` run)"
            )
        meta = json.loads((directory / REWARD_FILE).read_text())
        model = cls(
            load_backbone(str(directory)),
            gain=float(meta.get("gain", 1.0)),
            bias=float(meta.get("bias", 0.0)),
            pooling=meta.get("pooling", "last"),
        )
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        return model
