"""Where a PPO iteration's time goes on this CPU: torch-profiler tables for one update minibatch and one sampling call.

    .venv/bin/python benchmarks/profile_ppo.py                   # fp32 minibatch + sampling
    .venv/bin/python benchmarks/profile_ppo.py --dtype bfloat16  # the same minibatch under bf16 autocast

The minibatch: embedded model, full fine-tuning, 4 responses of a 16 × 48-token rollout (one
optimiser step, profiled after a warm-up step). Sampling: 16 chat prompts × 32 new tokens with the
log-probs and hidden states PPO keeps.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rlhfkit.config import load_config
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer


def table(fn) -> float:
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    seconds = time.perf_counter() - started
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    settings = [
        "generation.max_new_tokens=48",
        "train.batch_size=16",
        "train.mini_batch_size=4",
        "train.ppo_epochs=1",
        "train.steps=2",
        f"model.dtype={args.dtype}",
    ]
    trainer = PPOTrainer(load_config(PPOConfig, overrides=settings))
    records = trainer.prompt_batch(0)
    experience, _, timings = trainer.rollout(records)
    print(f"rollout {timings}, sequences {tuple(experience.samples.input_ids.shape)}")
    trainer.actor_critic.train()
    trainer._minibatch_step(experience.select(torch.arange(0, 4)))  # warm-up
    seconds = table(lambda: trainer._minibatch_step(experience.select(torch.arange(4, 8))))
    print(
        f"one minibatch step ({args.dtype}, 4 x {experience.samples.input_ids.shape[1]} tokens): "
        f"{seconds:.2f} s under the profiler"
    )

    trainer.config.generation.max_new_tokens = 32
    seconds = table(lambda: trainer.generate(records))
    print(f"sampling 16 prompts x 32 new tokens: {seconds:.2f} s under the profiler")


if __name__ == "__main__":
    main()
