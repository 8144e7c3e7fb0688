"""The least time a PPO iteration on TRL's workload can take on this machine with full fine-tuning in fp32.

TRL's workload (`benchmarks/trl_ppo_step.py`): 16 prompts x 32 sampled tokens, then 4 epochs of 4
minibatches of 4 rows: 16 optimiser steps, each a forward and a backward pass over 4 prompt + response
rows. This script counts the FLOPs of the matrix products of that work for SmolLM2-135M's shapes, on
the prompts' real token counts without padding:
- a forward pass: 2 x (the decoder's weights) per token, the causal attention's two products, and the LM
  head (49,152 x 576) on the response tokens only, as rlhfkit computes it;
- a backward pass: twice its forward (the inputs' gradients and the weights');
- scoring: one forward of the 16 rows each by the reference and the reward model (the policy's old
  log-probs and values can come from sampling, so its own scoring pass is not counted).
It divides them by the fastest fp32 product this machine gives at a minibatch's shapes (measured here,
as `benchmarks/cpu_kernels.py` does) and adds 16 fused AdamW steps (measured). Sampling is left out,
and so is everything else that is not a product, so the result is a floor: no implementation of this
PPO iteration in fp32 can go under it on this machine. Issue 13's goal is the iteration in a quarter
of TRL's time; `--trl-seconds` (TRL's measured iteration) prints that target beside the floor.

    .venv/bin/python benchmarks/ppo_compute_floor.py --trl-seconds 55.67
"""

import argparse
import statistics

import torch

from cpu_kernels import causal_attention_flops, decoder_weights, fastest_product, parameters_with_gradients, seconds
from rlhfkit.assets import PROMPTS
from rlhfkit.config import EMBEDDED_MODEL
from rlhfkit.data import format_prompt, load_records
from rlhfkit.models import load_tokenizer
from rlhfkit.models.loading import load_model_config
from rlhfkit.runtime.precision import cpu_flags

BATCH, MINIBATCH, NEW_TOKENS, EPOCHS = 16, 4, 32, 4


def prompt_lengths(tokenizer) -> list[int]:
    """Tokens of the workload's 16 prompts as rlhfkit's PPO formats them (the chat template)."""
    records = load_records(PROMPTS, "prompts", limit=BATCH)
    return [len(tokenizer(format_prompt(tokenizer, r), add_special_tokens=False)["input_ids"]) for r in records]


def forward_flops(config, lengths: list[int]) -> float:
    """FLOPs of the products of one forward pass over rows of `lengths` prompt tokens + NEW_TOKENS each."""
    flops = 0.0
    for prompt in lengths:
        tokens = prompt + NEW_TOKENS
        flops += 2 * decoder_weights(config) * tokens + causal_attention_flops(config, tokens)
        flops += 2 * config.vocab_size * config.hidden_size * NEW_TOKENS
    return flops


def adamw_seconds() -> float:
    """One fused AdamW step over all the model's parameters (what rlhfkit's optimiser runs)."""
    return seconds(torch.optim.AdamW(parameters_with_gradients(), lr=1e-5, fused=True).step, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl-seconds", type=float, help="TRL's measured seconds per iteration, for the 4x target")
    args = parser.parse_args()
    print("CPU flags:", cpu_flags())
    print("torch threads:", torch.get_num_threads())
    config = load_model_config(EMBEDDED_MODEL)
    lengths = prompt_lengths(load_tokenizer(EMBEDDED_MODEL))
    rows_per_minibatch = round(MINIBATCH * (statistics.fmean(lengths) + NEW_TOKENS))
    forward = forward_flops(config, lengths)
    update = EPOCHS * 3 * forward  # each row: a forward and a backward (2x) per epoch
    scoring = 2 * forward  # reference and reward model
    rate = fastest_product(rows_per_minibatch, config.hidden_size, config.intermediate_size)
    optimizer = EPOCHS * (BATCH // MINIBATCH) * adamw_seconds()
    floor = (update + scoring) / rate + optimizer
    print(f"prompt tokens: mean {statistics.fmean(lengths):.1f} ({min(lengths)}-{max(lengths)}); {NEW_TOKENS} new")
    print(f"products: update {update / 1e12:.2f} TFLOP, scoring {scoring / 1e12:.2f} TFLOP")
    print(f"fastest fp32 product at {rows_per_minibatch} x {config.hidden_size} x {config.intermediate_size}: "
          f"{rate / 1e9:.1f} GFLOP/s")  # fmt: skip
    print(f"16 fused AdamW steps: {optimizer:.2f} s")
    print(f"floor of the iteration (sampling not counted): {floor:.1f} s")
    if args.trl_seconds:
        print(f"issue 13's target, a quarter of TRL's {args.trl_seconds:.2f} s: {args.trl_seconds / 4:.1f} s")


if __name__ == "__main__":
    main()
