"""LoRA through peft. With LoRA the reference model is the base with the adapter disabled."""

from __future__ import annotations

from torch import nn

from rlhfkit.config import LoRAConfig


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.target_modules if t in present]
    if not targets:
        from rlhfkit.errors import UserError

        raise UserError(f"lora.target_modules {config.target_modules} match no module of this model; some names it has: {sorted(present)[:12]}")
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets, bias="none")
    return get_peft_model(model, lora)


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
