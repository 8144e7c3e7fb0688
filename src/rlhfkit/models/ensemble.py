"""An ensemble of reward heads on one backbone: Christiano et al. (2017)'s ensemble of predictors at one model's cost.

E linear heads read the same pooled hidden state. Each is trained on its own bootstrap resample
of the comparisons, so where the data pin the reward down they agree, and where they do not
(responses unlike anything labelled) they drift apart: their spread is the reward model's
uncertainty, which picks the pairs worth labelling and warns when the policy leaves the data.

The reward is the heads' mean. A mean of linear heads is one linear head (the mean weights), so
`save` writes an ordinary `ScalarHeadModel` directory with that head, which plain transformers
and `rlhfkit ppo --set reward.kind=model` load as before; the heads themselves go into
`ensemble_heads.safetensors` beside it, and `EnsembleRewardModel.load` reads both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlhfkit.errors import UserError
from rlhfkit.models.heads import ScalarHeadModel, check_pooling
from rlhfkit.models.hf_reward import pooled_scores, position_ids_from_mask

ENSEMBLE_FILE = "ensemble_heads.safetensors"


class EnsembleRewardModel(nn.Module):
    """A backbone with E scalar heads; `forward` is their mean, `head_scores` each head's score."""

    def __init__(
        self, backbone: nn.Module, ensemble_size: int, gain: float = 1.0, bias: float = 0.0, pooling: str = "last"
    ):
        super().__init__()
        if ensemble_size < 1:
            raise UserError(f"the ensemble needs at least one head, got {ensemble_size}")
        self.pooling = check_pooling(pooling)
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.heads = nn.Linear(hidden, ensemble_size)  # row e is head e
        nn.init.normal_(self.heads.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.heads.bias)
        self.gain, self.bias = gain, bias

    @property
    def ensemble_size(self) -> int:
        return self.heads.out_features

    def head_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) -> (B, E) fp32: gain * head_e + bias for every head, pooled as `pooling` says."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state
        values = self.heads(hidden.float())  # (B, T, E)
        pooled = [
            pooled_scores(values[..., e], attention_mask, response_mask, self.pooling) for e in range(values.shape[-1])
        ]
        return self.gain * torch.stack(pooled, dim=-1) + self.bias

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) -> (B,): the ensemble's reward, the mean over heads."""
        return self.head_scores(input_ids, attention_mask, response_mask).mean(-1)

    def mean_head(self) -> ScalarHeadModel:
        """The same backbone (shared) with the one head whose output is the heads' mean."""
        model = ScalarHeadModel(self.backbone, gain=self.gain, bias=self.bias, pooling=self.pooling)
        with torch.no_grad():
            model.head.weight.copy_(self.heads.weight.mean(0, keepdim=True))
            model.head.bias.copy_(self.heads.bias.mean(0, keepdim=True))
        return model.to(self.heads.weight.device)

    def save(self, directory: str | Path, tokenizer: Any = None, extra: dict[str, Any] | None = None) -> None:
        """The mean head as `ScalarHeadModel.save` writes it, and the raw heads in ensemble_heads.safetensors."""
        directory = Path(directory)
        self.mean_head().save(directory, tokenizer, {**(extra or {}), "ensemble_size": self.ensemble_size})
        heads = {"weight": self.heads.weight.detach().float().cpu(), "bias": self.heads.bias.detach().float().cpu()}
        save_file({k: v.contiguous() for k, v in heads.items()}, str(directory / ENSEMBLE_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> EnsembleRewardModel:
        """An ensemble saved by `save`; a plain reward model loads as an ensemble of its one head."""
        directory = Path(directory)
        single = ScalarHeadModel.load(directory)
        path = directory / ENSEMBLE_FILE
        heads = load_file(str(path)) if path.is_file() else dict(single.head.state_dict())
        model = cls(single.backbone, heads["weight"].shape[0], single.gain, single.bias, single.pooling)
        model.heads.load_state_dict({k: v.float() for k, v in heads.items()})
        return model
