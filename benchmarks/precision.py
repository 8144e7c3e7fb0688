"""Decoding and training speed of the embedded model in fp32 vs bf16 autocast (vs bf16 weights for decoding).

    .venv/bin/python benchmarks/precision.py            # prints new tokens/s and fwd+bwd tokens/s

The figures behind rlhfkit's float32 default on CPU (benchmarks/RESULTS.md, PPO section).
"""

import time

import torch

from rlhfkit.config import EMBEDDED_MODEL, GenerationConfig, LoRAConfig
from rlhfkit.data import format_prompt
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.lora import apply_lora
from rlhfkit.rollout.generation import sample
from rlhfkit.runtime.precision import autocast


def decoding(tokenizer) -> None:
    """16 prompts x 8 new tokens, one thread; bf16 autocast forced even on CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = load_causal_lm(EMBEDDED_MODEL, tokenizer).eval()
    texts = [format_prompt(tokenizer, {"prompt": f"Tell me about topic number {i}."}) for i in range(16)]
    for name, context, weights in (
        ("fp32", None, torch.float32),
        ("bf16 autocast", "bfloat16", torch.float32),
        ("bf16 weights", None, torch.bfloat16),
    ):
        model = model.to(weights)
        torch.manual_seed(0)
        started = time.perf_counter()
        with autocast(context) if context else torch.autocast("cpu", enabled=False):
            samples = sample(model, tokenizer, texts, GenerationConfig(max_new_tokens=8), "float32")
        seconds = time.perf_counter() - started
        print(f"decode {name:>14}: {samples.response_mask.sum().item() / seconds:6.1f} new tokens/s")
    torch.set_num_threads(threads)


def training(tokenizer) -> None:
    """Forward + backward of 8 x 80 tokens, full model and LoRA, default threads; the second of two repeats."""
    ids = torch.randint(100, 40000, (8, 80))
    for lora in (False, True):
        model = load_causal_lm(EMBEDDED_MODEL, tokenizer)
        if lora:
            model = apply_lora(model, LoRAConfig(enabled=True))
        for dtype in ("float32", "bfloat16"):
            for _ in range(2):
                started = time.perf_counter()
                with autocast(dtype):
                    out = model(input_ids=ids, logits_to_keep=1)
                out.logits.float().sum().backward()
                seconds = time.perf_counter() - started
            print(f"fwd+bwd lora={lora!s:5} {dtype:>8}: {ids.numel() / seconds:6.0f} tokens/s")


if __name__ == "__main__":
    tok = load_tokenizer(EMBEDDED_MODEL)
    decoding(tok)
    training(tok)
