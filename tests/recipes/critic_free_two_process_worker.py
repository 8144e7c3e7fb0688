"""Run by test_critic_free_ppo.py, once alone and once under `accelerate launch --num_processes 2`.

Every process samples the same global batch (same seed): 2 prompts x K = 4 responses, a group per
prompt. Each keeps its share of the prompts with their whole groups, scores it (group statistics,
or REINFORCE++'s whitening over every process's tokens) and takes one update; rank 0 saves the
gradients of that optimiser step (averaged over processes) and the update's statistics.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlhfkit.config import load_config
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer

PROMPTS = [{"prompt": "tell me a day"}, {"prompt": "write a book"}]
GROUP_SIZE = 4


def reward(prompts, responses, records):
    return [len(set(r.split())) / 10 for r in responses]


def main(model_dir: str, out_file: str, *overrides: str) -> None:
    settings = [
        f"model.name={model_dir}", "model.dtype=float32", "train.batch_size=2", f"algorithm.group_size={GROUP_SIZE}",
        "train.mini_batch_size=8", "train.ppo_epochs=1", "train.steps=1", "generation.max_new_tokens=6",
        "optim.learning_rate=1e-2",
    ]  # fmt: skip
    config = load_config(PPOConfig, overrides=[*settings, *overrides])
    trainer = PPOTrainer(config, reward=reward, prompts=PROMPTS)
    torch.manual_seed(1234)
    records = [record for record in PROMPTS for _ in range(GROUP_SIZE)]
    samples = trainer.generate(records)
    # end row 0 after 3 tokens, so the processes hold different token counts: a per-process mean
    # averaged by DDP would then differ from the one-process aggregation
    samples.response_mask[0, 3:] = False
    samples.response_ids[0, 3:] = trainer.tokenizer.pad_token_id
    runtime = trainer.runtime
    # the rows PPOTrainer.prompt_batch keeps: this process's prompts (rank::N), each with its whole group
    prompts = torch.arange(runtime.process_index, len(PROMPTS), runtime.num_processes)
    rows = (prompts[:, None] * GROUP_SIZE + torch.arange(GROUP_SIZE)).reshape(-1)
    experience, _ = trainer.score(samples.select(rows), [records[i] for i in rows.tolist()])
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
