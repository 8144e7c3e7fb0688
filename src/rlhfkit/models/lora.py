"""LoRA through peft. With LoRA the reference model is the base with the adapter disabled."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
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
    everything else of the forward (mask, rotary positions, final norm, head) is unchanged. The kept
    layers' attentions are numbered from 0 within the block, so that a key/value cache built there
    holds them from its layer 0, the layer whose length the forward reads for the cache's length
    and the causal mask.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    all_layers = decoder.layers
    kept = list(all_layers)[first:]
    attentions = [layer.self_attn for layer in kept if hasattr(getattr(layer, "self_attn", None), "layer_idx")]
    numbers = [attention.layer_idx for attention in attentions]
    decoder.layers = nn.ModuleList(kept)
    for index, attention in enumerate(attentions):
        attention.layer_idx = index
    try:
        yield
    finally:
        decoder.layers = all_layers
        for attention, number in zip(attentions, numbers):
            attention.layer_idx = number


def merged(model: nn.Module) -> nn.Module:
    """The model as plain transformers weights: a LoRA adapter merged into a copy (the model itself is kept)."""
    return copy.deepcopy(model).merge_and_unload() if isinstance(model, PeftModel) else model


def exported(model: nn.Module, precision: str) -> nn.Module:
    """The model as final/ holds it: LoRA merged, and in bf16 when training computed in bf16 (never the live model).

    Under bf16 autocast every matmul already read its weights rounded to bf16, so bf16 weights keep
    what the run computed with at half the disk; the fp32 masters stay in the checkpoints for --resume.
    An fp32 run keeps fp32.
    """
    plain = merged(model)
    if precision != "bfloat16":
        return plain
    return (plain if plain is not model else copy.deepcopy(model)).to(torch.bfloat16)


def save_adapter(model: PeftModel, tokenizer: Any, directory: Path) -> None:
    """The PEFT adapter (adapter_config.json + adapter_model.safetensors) and the tokenizer it was trained with.

    Its base_model_name_or_path is the directory or hub id the base loaded from (for a model that was
    itself an adapter merged into its base, that adapter's directory: rlhfkit loads the chain).
    """
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def save_reward_adapter(backbone: PeftModel, score_weight: torch.Tensor, tokenizer: Any, directory: Path) -> None:
    """A reward model's LoRA as PEFT saves a sequence classifier's (task SEQ_CLS, `score` a module to save).

    The backbone's adapter tensors move under the classifier's prefix, and score.weight is the head with
    the gain folded in, as in the merged directory. PEFT loads it with
    `AutoPeftModelForSequenceClassification.from_pretrained(directory, num_labels=1)`: it scores with
    the standard class (last-token pooling, no score_offset), so differences between answers match.
    """
    prefix = backbone.get_base_model().base_model_prefix
    state = {
        key.replace("base_model.model.", f"base_model.model.{prefix}.", 1): tensor.contiguous()
        for key, tensor in get_peft_model_state_dict(backbone).items()
    }
    state["base_model.model.score.weight"] = score_weight.detach().float().contiguous()
    config = dataclasses.replace(backbone.peft_config["default"], task_type="SEQ_CLS", modules_to_save=["score"])
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    save_file(state, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
