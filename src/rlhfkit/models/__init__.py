"""Loading models, LoRA, and the value and reward heads."""

from rlhfkit.models.heads import ScalarHeadModel, ValueHead, last_token_index, position_ids_from_mask
from rlhfkit.models.loading import (
    disable_dropout,
    load_backbone,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)

__all__ = [
    "ScalarHeadModel",
    "ValueHead",
    "disable_dropout",
    "last_token_index",
    "load_backbone",
    "load_causal_lm",
    "load_tokenizer",
    "position_ids_from_mask",
    "resolve_model_path",
]
