"""Seconds per GRPO iteration and peak memory of TRL 1.12's GRPOTrainer on the workload of `rlhfkit grpo`.

Runs in its own virtual environment (TRL pins its own transformers/accelerate/datasets), never in
rlhfkit's .venv (the same one as benchmarks/trl_ppo_step.py, plus VADER and peft):

    python3.11 -m venv /tmp/trl-venv
    /tmp/trl-venv/bin/pip install torch==2.13.0      # first, exact pin: a looser one pulls CUDA wheels
    /tmp/trl-venv/bin/pip install "trl==1.12.*" vaderSentiment "peft==0.21.2"
    /tmp/trl-venv/bin/python benchmarks/trl_grpo_step.py --iterations 4 [--lora]

The comparison with rlhfkit, the two programs alternated in one run, each iteration timed the same
way (wall clock, first iteration warm-up, median of the others), is benchmarks/grpo_vs_trl.py:

    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --iterations 4            # full fine-tuning
    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --iterations 4 --lora
    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --epochs 1 --mini-batch 16  # TRL's default shape

Workload (the defaults of `rlhfkit grpo`, set here explicitly where TRL's differ): SmolLM2-135M-
Instruct (the cached copy in ~/.cache/rlhfkit) as policy and reference; the first P=4 prompts of
rlhfkit's prompts.jsonl as one user turn in the model's chat template (so every iteration samples the
same 4 prompts), K=4 completions each (16 per iteration), at most 32 new tokens at temperature 1
(no top-k/top-p), stopping at EOS; reward = VADER compound of the completion (rlhfkit's
reward.kind=sentiment); group advantages (score - group mean) / group std (TRL scale_rewards=group
= rlhfkit algorithm.scale_by_std); clipped surrogate with ε=0.2; KL to the reference as a k3 loss
term with β=0.05 (TRL's default β is 0: no reference at all); per-token losses averaged over the
minibatch's tokens (TRL loss_type=dapo = rlhfkit token_mean); 4 passes over the 16 completions in
minibatches of 4, i.e. 16 fused-AdamW steps per iteration (TRL: per_device_train_batch_size=4,
steps_per_generation=4, num_iterations=4 = rlhfkit train.ppo_epochs=4, mini_batch_size 4), lr 1e-5
constant (TRL's default: 1e-6, linear decay), gradient norm clipped to 1, fp32 (GRPOConfig
defaults to bf16), CPU, no gradient checkpointing (GRPOConfig's default is on), no vLLM, no
evaluation, no checkpoints. `--lora`: rlhfkit's model.lora defaults (r=16, alpha=32, dropout 0, all
seven linear projections of every layer), the reference then being the base with the adapter off,
as in rlhfkit; `--lora --lora-top-layers 8` puts them on the last 8 layers only (peft's
`layers_to_transform`, rlhfkit's model.lora.top_layers=8). `--epochs 1 --mini-batch 16` is TRL's
default shape: one optimiser step per generation batch.

What cannot match: with more than one step per generation TRL recomputes the old policy's
log-probs in an extra forward pass over the 16 completions (rlhfkit keeps them from sampling);
TRL shuffles the generation batch once, rlhfkit draws new minibatches every pass; the pad token is
<|endoftext|> in both (rlhfkit picks a free special token; the shipped pad is EOS). Neither
affects what a step computes, only how much it costs, which is what is measured.

Timing: a TrainerCallback stamps time.perf_counter() at on_train_begin and at the on_step_end that
closes each iteration (every steps_per_generation x num_iterations optimiser steps), so the
difference between consecutive stamps is one whole iteration: generation, reward, old/reference
log-probs, the updates and TRL's metric logging. The first iteration is warm-up; the figure is the
median of the others. Peak RSS is ru_maxrss of this process. The last line printed is one JSON
object (what grpo_vs_trl.py reads).
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
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

MODEL = Path.home() / ".cache/rlhfkit/smollm2-135m-instruct"
PROMPTS = Path(__file__).resolve().parent.parent / "src/rlhfkit/assets/prompts.jsonl"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ANALYZER = SentimentIntensityAnalyzer()


class IterationClock(TrainerCallback):
    """Stamps the wall clock at the start and after the last optimiser step of every iteration."""

    def __init__(self, steps_per_iteration: int) -> None:
        self.steps_per_iteration = steps_per_iteration
        self.stamps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps_per_iteration == 0:
            self.stamps.append(time.perf_counter())
            print(f"iteration {len(self.stamps) - 1}: {self.stamps[-1] - self.stamps[-2]:.2f} s", flush=True)


def vader_sentiment(prompts, completions, **kwargs) -> list[float]:
    """rlhfkit's reward.kind=sentiment: the VADER compound score of the completion's text, in [-1, 1]."""
    return [ANALYZER.polarity_scores(completion[-1]["content"])["compound"] for completion in completions]


def grpo_config(args: argparse.Namespace, out_dir: str) -> GRPOConfig:
    responses = args.prompts * args.generations
    if responses % args.mini_batch:
        raise SystemExit(f"--mini-batch {args.mini_batch} must divide the {responses} completions of an iteration")
    steps_per_generation = responses // args.mini_batch
    return GRPOConfig(
        output_dir=out_dir,
        num_generations=args.generations,
        per_device_train_batch_size=args.mini_batch,  # completions per optimiser step
        gradient_accumulation_steps=1,
        steps_per_generation=steps_per_generation,  # generation batch = P x K completions
        num_iterations=args.epochs,  # passes over each generation batch
        max_steps=args.iterations * steps_per_generation * args.epochs,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.05,
        epsilon=0.2,
        scale_rewards="group",
        loss_type="dapo",
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        bf16=False,
        fp16=False,
        activation_checkpointing=False,  # GRPOConfig's gradient_checkpointing defaults to True
        use_vllm=False,
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=steps_per_generation * args.epochs,  # once per iteration, as rlhfkit logs
        log_completions=False,
        seed=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=4, help="GRPO iterations, the first one is warm-up")
    parser.add_argument("--prompts", type=int, default=4, help="P: prompts per iteration (the first P of the file)")
    parser.add_argument("--generations", type=int, default=4, help="K: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="passes over each generation batch (num_iterations)")
    parser.add_argument("--mini-batch", type=int, default=4, help="completions per optimiser step")
    parser.add_argument("--lora", action="store_true", help="LoRA as rlhfkit's model.lora defaults")
    parser.add_argument(
        "--lora-top-layers", type=int, default=0, help="with --lora: adapters on the last N layers only (0: all)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = AutoTokenizer.from_pretrained(MODEL, padding_side="left")
    tokenizer.pad_token = "<|endoftext|>"  # id 0, as rlhfkit chooses; the shipped pad token is EOS
    assert tokenizer.pad_token_id == 0 != tokenizer.eos_token_id
    with open(PROMPTS) as f:
        records = [json.loads(line) for line in f if line.strip()][: args.prompts]
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": r["prompt"]}] for r in records]})

    policy = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    policy.config.pad_token_id = policy.generation_config.pad_token_id = tokenizer.pad_token_id
    layers = policy.config.num_hidden_layers
    top = list(range(layers - args.lora_top_layers, layers)) if args.lora_top_layers else None
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
        layers_to_transform=top,
    )  # fmt: skip
    config = grpo_config(args, tempfile.mkdtemp(prefix="trl-grpo-bench-"))
    clock = IterationClock(config.steps_per_generation * config.num_iterations)
    trainer = GRPOTrainer(
        model=policy, reward_funcs=vader_sentiment, args=config, train_dataset=dataset, processing_class=tokenizer,
        callbacks=[clock], peft_config=lora if args.lora else None,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # it prints every metric dict
    trainer.train()

    per_iteration = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    measured = per_iteration[1:] or per_iteration
    lengths = [row["completions/mean_length"] for row in trainer.state.log_history if "completions/mean_length" in row]
    result = {
        "program": f"TRL {trl.__version__} GRPOTrainer",
        "mode": (f"lora-top{args.lora_top_layers}" if args.lora_top_layers else "lora") if args.lora else "full",
        "s_per_iteration": statistics.median(measured),
        "iterations_s": per_iteration,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "completion_length_mean": statistics.mean(lengths) if lengths else None,
        "prompts": args.prompts,
        "generations": args.generations,
        "max_new_tokens": args.max_new_tokens,
        "epochs": args.epochs,
        "mini_batch": args.mini_batch,
        "threads": torch.get_num_threads(),
    }
    print("seconds per iteration: " + ", ".join(f"{s:.2f}" for s in per_iteration) + " (first is warm-up)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
