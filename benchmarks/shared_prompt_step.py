"""One GRPO minibatch step (LoRA on the top 8 layers) reading repeated prompts once, against reading every row whole.

    .venv/bin/python benchmarks/shared_prompt_step.py            # 4 random rows of 4 prompts x 4 responses
    .venv/bin/python benchmarks/shared_prompt_step.py --grouped  # 4 rows of one prompt

One process: a rollout of `rlhfkit grpo`'s defaults on 4 packaged prompts x 4 responses x 32 new tokens
(fp32, sentiment reward), then minibatch steps of 4 rows with `models.shared_prompts` on and off,
alternated; medians after one warm-up step each. Run it on a quiet machine.
"""

import argparse
import statistics
import time

import torch

from rlhfkit.assets import PROMPTS
from rlhfkit.config import load_config
from rlhfkit.configs.ppo import COMMAND_DEFAULTS
from rlhfkit.data import load_records
from rlhfkit.models import actor_critic
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grouped", action="store_true", help="every minibatch holds the 4 responses of one prompt")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    overrides = [
        "model.lora.enabled=true", "model.lora.top_layers=8", "model.dtype=float32", "generation.max_new_tokens=32",
        "train.batch_size=4", "train.mini_batch_size=4", "generation.engine=hf", "reward.kind=sentiment",
    ]  # fmt: skip
    config = load_config(PPOConfig, overrides=overrides, base=COMMAND_DEFAULTS["grpo"])
    trainer = PPOTrainer(config, prompts=load_records(PROMPTS, "prompts", limit=4), command="grpo")
    experience, _, _ = trainer.rollout(trainer.prompt_batch(0))
    shared = actor_critic.shared_prompt_response_logits
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"shared": [], "whole": []}
    for round_index in range(args.rounds):
        for side in ("shared", "whole") if round_index % 2 == 0 else ("whole", "shared"):
            actor_critic.shared_prompt_response_logits = shared if side == "shared" else (lambda *_: None)
            if args.grouped:  # the rollout holds each prompt's 4 responses in consecutive rows
                rows = 4 * (round_index % 4) + torch.arange(4)
            else:
                rows = torch.randperm(16, generator=generator)[:4]
            started = time.perf_counter()
            trainer.update.minibatch_step(experience.select(rows))
            times[side].append(time.perf_counter() - started)
    for side, seconds in times.items():
        print(f"{side}: median {statistics.median(seconds[1:]):.3f} s  (all: {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
