"""LoRA on the last N layers only: the adapters sit where asked, and backward stops below them."""

import pytest
import torch

from rlhfkit.config import LoRAConfig
from rlhfkit.errors import UserError
from rlhfkit.models import load_backbone, load_causal_lm, load_tokenizer
from rlhfkit.models.lora import apply_lora


def adapted_layers(model) -> set[int]:
    return {
        int(name.split("layers.")[1].split(".")[0])
        for name, p in model.named_parameters()
        if "lora_" in name and p.requires_grad
    }


def test_top_layers_adapts_only_the_last_layers(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, tokenizer)
    count = model.config.num_hidden_layers
    assert count >= 2
    everywhere = apply_lora(load_causal_lm(tiny_model_dir, tokenizer), LoRAConfig(enabled=True))
    top = apply_lora(model, LoRAConfig(enabled=True, top_layers=1))
    assert adapted_layers(everywhere) == set(range(count))
    assert adapted_layers(top) == {count - 1}
    # a reward model's backbone (no LM head, no "model." prefix) too
    assert adapted_layers(
        apply_lora(load_backbone(tiny_model_dir, tokenizer), LoRAConfig(enabled=True, top_layers=1))
    ) == {count - 1}

    # backward records nothing below the adapted layer: the first layer's output has no grad_fn
    seen = {}
    first_layer = top.base_model.model.model.layers[0]
    handle = first_layer.register_forward_hook(
        lambda module, args, output: seen.setdefault("out", output[0] if isinstance(output, tuple) else output)
    )
    ids = torch.tensor([[3, 4, 5, 6]])
    top(input_ids=ids).logits.sum().backward()
    handle.remove()
    assert seen["out"].grad_fn is None
    assert all(p.grad is not None for name, p in top.named_parameters() if p.requires_grad)


def test_top_layers_beyond_the_model_is_refused(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, tokenizer)
    with pytest.raises(UserError, match="lora.top_layers 99 exceeds the model's"):
        apply_lora(model, LoRAConfig(enabled=True, top_layers=99))
