"""Seconds per PPO iteration of TRL 1.12's PPOTrainer on the workload benchmarks/ppo_step.py times.

Runs in its own virtual environment (TRL pins its own transformers/accelerate/datasets), never in
rlhfkit's .venv:

    python3.11 -m venv /tmp/trl-venv
    /tmp/trl-venv/bin/pip install torch==2.13.0      # first, exact pin: a looser one pulls CUDA wheels
    /tmp/trl-venv/bin/pip install "trl==1.12.*"
    /tmp/trl-venv/bin/python benchmarks/trl_ppo_step.py --iterations 4

and compare with `.venv/bin/python benchmarks/ppo_step.py --max-new-tokens 32 --reward model
--modes full,lora,full-separate` on the same machine.

Workload: SmolLM2-135M-Instruct (the cached copy in ~/.cache/rlhfkit) as policy, reference, value
and reward model (value and reward: AutoModelForSequenceClassification, num_labels=1, untrained
score head: only the time matters); the first prompts of rlhfkit's prompts.jsonl in the chat
template; 16 prompts per iteration, 32 sampled tokens at temperature 1.0, 4 PPO epochs over
minibatches of 4 (16 optimiser steps of fused AdamW per iteration), fp32, CPU, no evaluation, no
sample generations, no checkpoints. TRL's PPOTrainer lives in `trl.experimental.ppo` in 1.12 (not
`trl.PPOTrainer`; 1.13 removed it). With no stop token TRL never stops early, so every response is
32 tokens. TRL always trains a separate value transformer (policy + value = two 135M models in
AdamW) and its loop does not clip gradients; rlhfkit's default critic is a value head on the
policy (critic.kind=shared), so the like-for-like rlhfkit figure is one with critic.kind=separate.

Timing: a TrainerCallback stamps time.perf_counter() at on_train_begin and at every on_step_end;
TRL's loop calls on_step_end once per PPO iteration, after the rollout (generation, reference /
value / reward forwards, advantages), the 4x4 optimiser steps and the metric logging, so the
difference between consecutive stamps is one whole iteration. The first iteration is warm-up; the
figure reported is the median of the others. Peak RSS is ru_maxrss of this process (models,
optimiser state and all).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PrinterCallback,
    TrainerCallback,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer

MODEL = Path.home() / ".cache/rlhfkit/smollm2-135m-instruct"
PROMPTS = Path(__file__).resolve().parent.parent / "src/rlhfkit/assets/prompts.jsonl"
BATCH, MINIBATCH, NEW_TOKENS, EPOCHS = 16, 4, 32, 4


class IterationClock(TrainerCallback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())
        print(f"iteration {len(self.stamps) - 1}: {self.stamps[-1] - self.stamps[-2]:.2f} s", flush=True)


def load(cls, pad_id: int, **kwargs):
    model = cls.from_pretrained(MODEL, dtype=torch.float32, **kwargs)
    model.config.pad_token_id = pad_id
    if getattr(model, "generation_config", None) is not None:  # causal LMs only
        model.generation_config.pad_token_id = pad_id
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=4, help="PPO iterations, the first one is warm-up")
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = AutoTokenizer.from_pretrained(MODEL, padding_side="left")
    tokenizer.pad_token = "<|endoftext|>"  # id 0; the shipped pad token is EOS
    assert tokenizer.pad_token_id == 0 != tokenizer.eos_token_id

    n_prompts = BATCH * args.iterations
    with open(PROMPTS) as f:
        records = [json.loads(line) for line in f if line.strip()][:n_prompts]
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        for r in records
    ]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})

    policy = load(AutoModelForCausalLM, tokenizer.pad_token_id)
    reference = load(AutoModelForCausalLM, tokenizer.pad_token_id)
    value = load(AutoModelForSequenceClassification, tokenizer.pad_token_id, num_labels=1)
    reward = load(AutoModelForSequenceClassification, tokenizer.pad_token_id, num_labels=1)

    out_dir = tempfile.mkdtemp(prefix="trl-ppo-bench-")
    config = PPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=BATCH,  # one iteration = 16 rollouts ...
        gradient_accumulation_steps=1,
        num_mini_batches=BATCH // MINIBATCH,  # ... updated in minibatches of 4
        num_ppo_epochs=EPOCHS,
        response_length=NEW_TOKENS,
        temperature=1.0,
        total_episodes=n_prompts,  # = `--iterations` iterations
        local_rollout_forward_batch_size=BATCH,
        num_sample_generations=0,
        bf16=False,  # PPOConfig defaults to bf16=True
        fp16=False,
        gradient_checkpointing=False,  # PPOConfig defaults to True (its train loop never enables it anyway)
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
    )
    clock = IterationClock()
    trainer = PPOTrainer(
        args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward,
        value_model=value, train_dataset=dataset, callbacks=[clock],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # it prints every metric dict
    trainer.train()

    per_iteration = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    measured = per_iteration[1:] or per_iteration
    print(
        f"TRL {trl.__version__} PPOTrainer: {BATCH} prompts x {NEW_TOKENS} new tokens, {EPOCHS} epochs, "
        f"minibatch {MINIBATCH}, float32, {torch.get_num_threads()} threads"
    )
    print("seconds per iteration: " + ", ".join(f"{s:.2f}" for s in per_iteration) + " (first is warm-up)")
    print(f"median of measured iterations: {statistics.median(measured):.2f} s")
    eos = [row["val/num_eos_tokens"] for row in trainer.state.log_history if "val/num_eos_tokens" in row]
    print(f"EOS tokens among the {BATCH * NEW_TOKENS} sampled tokens, per iteration: {eos}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
