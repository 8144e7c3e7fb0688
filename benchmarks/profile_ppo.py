"""Where a PPO iteration's time goes on this CPU: torch-profiler tables for one update minibatch and one sampling call.

    .venv/bin/python benchmarks/profile_ppo.py                   # fp32 minibatch + sampling
    .venv/bin/python benchmarks/profile_ppo.py --dtype bfloat16  # the same minibatch under bf16 autocast
    .venv/bin/python benchmarks/profile_ppo.py --command grpo --new-tokens 32 --no-sampling \
        --set model.lora.enabled=true model.lora.top_layers=8     # grpo_vs_trl.py's LoRA top-8 minibatch
    .venv/bin/python benchmarks/profile_ppo.py --command grpo --new-tokens 32 --no-sampling --timed 12 --shapes \
        --set model.lora.enabled=true model.lora.top_layers=8 reward.kind=sentiment
        # first the median of 12 unprofiled minibatch steps; the table by input shape
        # (PYTHONPATH=<another tree>/src times that tree's code on the same minibatches)

The minibatch: embedded model, full fine-tuning unless `--set` says otherwise, 4 responses of a
16-response rollout of `--new-tokens` tokens (one optimiser step, profiled after a warm-up step).
Sampling: the same prompts × 32 new tokens with the log-probs and hidden states the update keeps.
"""

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rlhfkit.config import load_config
from rlhfkit.configs.ppo import COMMAND_DEFAULTS
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer


def table(fn, shapes: bool = False) -> float:
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        fn()
    seconds = time.perf_counter() - started
    averages = prof.key_averages(group_by_input_shape=shapes)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=24 if shapes else 14, max_name_column_width=40))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--command", default="ppo", choices=["ppo", *COMMAND_DEFAULTS])
    parser.add_argument("--new-tokens", type=int, default=48, help="response length of the profiled minibatch")
    parser.add_argument("--no-sampling", action="store_true", help="profile the minibatch only")
    parser.add_argument("--timed", type=int, default=0, help="first time this many unprofiled minibatch steps")
    parser.add_argument("--shapes", action="store_true", help="the profile's table by operator and input shape")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further config overrides")
    args = parser.parse_args()
    defaults = COMMAND_DEFAULTS.get(args.command, {})
    group_size = defaults.get("algorithm", {}).get("group_size", 1)
    settings = [
        f"generation.max_new_tokens={args.new_tokens}",
        f"train.batch_size={16 // group_size}",
        "train.mini_batch_size=4",
        "train.ppo_epochs=1",
        "train.steps=2",
        f"model.dtype={args.dtype}",
        *args.set,
    ]
    trainer = PPOTrainer(load_config(PPOConfig, overrides=settings, base=defaults), command=args.command)
    records = trainer.prompt_batch(0)
    experience, _, timings = trainer.rollout(records)
    print(f"rollout {timings}, sequences {tuple(experience.samples.input_ids.shape)}")
    trainer.actor_critic.train()
    trainer.update.minibatch_step(experience.select(torch.arange(0, 4)))  # warm-up
    if args.timed:
        draws = torch.Generator().manual_seed(0)  # the same minibatches in every tree
        seconds = []
        for _ in range(args.timed):
            rows = experience.select(torch.randperm(experience.samples.input_ids.shape[0], generator=draws)[:4])
            started = time.perf_counter()
            trainer.update.minibatch_step(rows)
            seconds.append(time.perf_counter() - started)
        print(f"{args.timed} minibatch steps of 4 random rows: median {statistics.median(seconds):.3f} s")
    seconds = table(lambda: trainer.update.minibatch_step(experience.select(torch.arange(4, 8))), args.shapes)
    print(
        f"one minibatch step ({args.dtype}, 4 x {experience.samples.input_ids.shape[1]} tokens): "
        f"{seconds:.2f} s under the profiler"
    )
    if not args.no_sampling:
        trainer.config.generation.max_new_tokens = 32
        seconds = table(lambda: trainer.generate(records))
        print(f"sampling {len(records)} prompts x 32 new tokens: {seconds:.2f} s under the profiler")


if __name__ == "__main__":
    main()
