"""LoRA through peft. With LoRA the reference model is the base with the adapter disabled."""

from __future__ import annotations

from torch import nn

from rlhfkit.config import LoRAConfig
from rlhfkit.errors import UserError


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.target_modules if t in present]
    if not targets:
        raise UserError(f"lora.target_modules {config.target_modules} match no module of this model; some names it has: {sorted(present)[:12]}")
    layers = None
    if config.top_layers:
        count = model.config.num_hidden_layers
        if config.top_layers > count:
            raise UserError(f"lora.top_layers {config.top_layers} exceeds the model's {count} layers")
        layers = list(range(count - config.top_layers, count))
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets, bias="none", layers_to_transform=layers, layers_pattern="layers" if layers else None)
    return get_peft_model(model, lora)


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
