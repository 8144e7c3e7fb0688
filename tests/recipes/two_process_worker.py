"""Run by the two-process tests (two_process.py), once alone and once under `accelerate launch --num_processes 2`.

    two_process_worker.py OUT_FILE sft|rm|dpo MODEL_DIR DATA [KEY=VALUE ...]   one optimiser step
    two_process_worker.py OUT_FILE ppo MODEL_DIR GROUP_SIZE [KEY=VALUE ...]   one PPO update
    two_process_worker.py OUT_FILE rng                                         random streams, saved and restored

Every process draws the same global batch and keeps its share; rank 0 saves the gradients of the
step (as DDP averaged them over processes), the held-out metrics before it and the step's metrics.
"""

import sys

import torch
from two_process import capture_gradients, save_on_main

from rlhfkit.config import load_config
from rlhfkit.configs.dpo import DPOConfig
from rlhfkit.configs.ppo import PPOConfig
from rlhfkit.configs.reward import RMConfig
from rlhfkit.configs.sft import SFTConfig
from rlhfkit.recipes.dpo import DPOTrainer
from rlhfkit.recipes.ppo import PPOTrainer
from rlhfkit.recipes.reward import RewardModelTrainer
from rlhfkit.recipes.sft import SFTTrainer
from rlhfkit.runtime import Runtime

TRAINERS = {"sft": (SFTConfig, SFTTrainer), "rm": (RMConfig, RewardModelTrainer), "dpo": (DPOConfig, DPOTrainer)}
PROMPTS = ["tell me a day", "write a book", "how is the weather", "say what you think"]


def one_step(out_file: str, command: str, model_dir: str, data: str, *overrides: str) -> None:
    config_class, trainer_class = TRAINERS[command]
    settings = [f"model.name={model_dir}", "model.dtype=float32", f"data.train={data}", "train.steps=1"]
    trainer = trainer_class(load_config(config_class, overrides=[*settings, *overrides]))
    gradients = capture_gradients(trainer)
    held_out, _ = trainer.evaluate()  # DPO's case holds 1 held-out pair: one process evaluates none
    metrics, _ = trainer.train_step()
    save_on_main(trainer.runtime, out_file, gradients, {**held_out, **metrics})


def distinct_words(prompts, responses, records):
    return [len(set(r.split())) / 10 for r in responses]


def ppo_update(out_file: str, model_dir: str, group_size: str, *overrides: str) -> None:
    """4 prompts x 1 response (PPO) or 2 x K (a group estimator); row 0 ends after 3 tokens, so the processes
    hold different token counts (a per-process mean averaged by DDP would differ from the one-process one)."""
    k = int(group_size)
    prompts = [{"prompt": p} for p in PROMPTS[: 4 if k == 1 else 2]]
    settings = [f"model.name={model_dir}", "model.dtype=float32", f"train.batch_size={len(prompts)}",
                f"algorithm.group_size={k}", f"train.mini_batch_size={len(prompts) * k}", "train.ppo_epochs=1",
                "train.steps=1", "generation.max_new_tokens=6", "optim.learning_rate=1e-2"]  # fmt: skip
    trainer = PPOTrainer(load_config(PPOConfig, overrides=[*settings, *overrides]), distinct_words, prompts)
    torch.manual_seed(1234)
    records = [record for record in prompts for _ in range(k)]
    samples = trainer.generate(records)
    samples.response_mask[0, 3:] = False
    samples.response_ids[0, 3:] = trainer.tokenizer.pad_token_id
    runtime = trainer.runtime
    # the rows PPOTrainer.prompt_batch keeps: this process's prompts (rank::N), each with its whole group
    mine = torch.arange(runtime.process_index, len(prompts), runtime.num_processes)
    rows = (mine[:, None] * k + torch.arange(k)).reshape(-1)
    experience, _ = trainer.score(samples.select(rows), [records[i] for i in rows.tolist()])
    gradients = capture_gradients(trainer)
    save_on_main(runtime, out_file, gradients, trainer.update(experience))


def random_streams(out_file: str) -> None:
    """Each process's first two draws after seeding, and the same two draws again after restoring the streams
    that `rng_states` gathered before them, then two draws after restoring only process 0's streams (a
    checkpoint written by one process): rows (process, [first, again, from_one]) of "draws"."""
    runtime = Runtime(seed=3)
    states = runtime.rng_states()
    first = torch.rand(2)
    runtime.set_rng_states(states)
    again = torch.rand(2)
    runtime.set_rng_states(states[:1])
    from_one = torch.rand(2)
    save_on_main(runtime, out_file, {"draws": runtime.gather(torch.stack([first, again, from_one])[None])}, {})


if __name__ == "__main__":
    out, command, *rest = sys.argv[1:]
    if command == "rng":
        random_streams(out)
    else:
        ppo_update(out, *rest) if command == "ppo" else one_step(out, command, *rest)
