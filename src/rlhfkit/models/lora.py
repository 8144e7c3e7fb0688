"""LoRA through peft. With LoRA the reference model is the base with the adapter disabled."""

from __future__ import annotations

import contextlib
import copy

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from rlhfkit.config import LoRAConfig
from rlhfkit.errors import UserError


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.target_modules if t in present]
    if not targets:
        raise UserError(
            f"lora.target_modules {config.target_modules} match no module of this model; "
            f"some names it has: {sorted(present)[:12]}"
        )
    layers = None
    if config.top_layers:
        count = model.config.num_hidden_layers
        if config.top_layers > count:
            raise UserError(f"lora.top_layers {config.top_layers} exceeds the model's {count} layers")
        layers = list(range(count - config.top_layers, count))
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
    )
    return get_peft_model(model, lora)


def is_lora(model: nn.Module) -> bool:
    return isinstance(model, PeftModel)


def frozen_layer_count(model: nn.Module) -> int:
    """How many transformer layers sit below the lowest LoRA adapter (0 without `lora.top_layers`).

    Those layers are frozen and dropout is off, so their output for a sequence never changes
    during training: it can be computed once and reused (`decoder_from_layer`).
    """
    peft_config = getattr(model, "peft_config", {}).get("default")
    layers = getattr(peft_config, "layers_to_transform", None)
    if isinstance(layers, int):
        return layers
    return min(layers) if layers else 0


@contextlib.contextmanager
def decoder_from_layer(model: nn.Module, first: int):
    """Within the block, `model(inputs_embeds=h)` runs only the decoder layers from `first` up.

    `h` must be the hidden states entering layer `first` (the output of the layers below it);
    everything else of the forward (mask, rotary positions, final norm, head) is unchanged.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    all_layers = decoder.layers
    decoder.layers = nn.ModuleList(list(all_layers)[first:])
    try:
        yield
    finally:
        decoder.layers = all_layers


def merged(model: nn.Module) -> nn.Module:
    """The model as plain transformers weights: a LoRA adapter merged into a copy (the model itself is kept)."""
    return copy.deepcopy(model).merge_and_unload() if isinstance(model, PeftModel) else model
