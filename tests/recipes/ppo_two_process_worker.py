"""Run by test_ppo_distributed.py, once alone and once under `accelerate launch --num_processes 2`.

Every process samples the same global batch (same seed), keeps its share of the rows, scores it,
and takes one PPO update; rank 0 saves the gradients of that optimiser step (averaged over processes)
and the update's statistics (token-weighted over all processes).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlhfkit.config import load_config
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer


def reward(prompts, responses, records):
    return [len(r.split()) / 10 for r in responses]


def main(model_dir: str, out_file: str, *overrides: str) -> None:
    settings = [
        f"model.name={model_dir}",
        "model.dtype=float32",
        "train.batch_size=4",
        "train.mini_batch_size=4",
        "train.ppo_epochs=1",
        "train.steps=1",
        "generation.max_new_tokens=6",
        "optim.learning_rate=1e-2",
    ]
    config = load_config(PPOConfig, overrides=[*settings, *overrides])
    prompts = [{"prompt": p} for p in ["tell me a day", "write a book", "how is the weather", "say what you think"]]
    trainer = PPOTrainer(config, reward=reward, prompts=prompts)
    torch.manual_seed(1234)
    samples = trainer.generate(prompts)
    # end row 0 after 3 tokens, so the processes hold different token counts (9 vs 12): a per-process
    # mean loss averaged by DDP would then differ from the one-process mean over all tokens
    samples.response_mask[0, 3:] = False
    samples.response_ids[0, 3:] = trainer.tokenizer.pad_token_id
    runtime = trainer.runtime
    share = torch.arange(runtime.process_index, len(prompts), runtime.num_processes)  # the rows runtime.shard keeps
    experience, _ = trainer.score(samples.select(share), runtime.shard(prompts))
    # compare gradients, not weights: Adam's first step is lr * sign(g), blind to how g was weighted
    gradients = {}
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        gradients.update(
            {name: p.grad.detach().clone() for name, p in trainer.unwrapped.named_parameters() if p.grad is not None}
        )
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    stats = trainer.update(experience)
    if runtime.is_main:
        save_file(gradients, out_file)
        Path(out_file).with_suffix(".json").write_text(json.dumps(stats))
    runtime.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
