"""Seconds per PPO iteration on the embedded model, split into generation, scoring and update.

    .venv/bin/python benchmarks/ppo_step.py                      # full and LoRA, 16 prompts x 48 new tokens
    .venv/bin/python benchmarks/ppo_step.py --max-new-tokens 32 --reward model --modes full,lora,full-separate
        # TRL's workload (benchmarks/trl_ppo_step.py): a 135M reward model scores the responses;
        # full-separate also trains a separate 135M value model as TRL does (rlhfkit's default is
        # a value head on the policy, which shares its forward pass)
    .venv/bin/python benchmarks/ppo_step.py --max-new-tokens 32 --reward model --modes lora,lora-top8
        # LoRA on the last 8 of 30 layers: the update starts from the rollout's output of the 22 frozen ones
    .venv/bin/python benchmarks/ppo_step.py --command grpo --batch-size 4 --max-new-tokens 32 --modes full,lora
        # `rlhfkit grpo`'s defaults on the workload of benchmarks/trl_grpo_step.py: the first 4 prompts,
        # 4 responses each (algorithm.group_size), 16 per iteration; benchmarks/grpo_vs_trl.py alternates both
    .venv/bin/python benchmarks/ppo_step.py --responses 16 --max-new-tokens 32 --rounds 2 \
        --modes ppo:full-separate,ppo:full,grpo:full,rloo:full
        # a COMMAND: prefix runs that command's defaults; --responses 16 gives every configuration 16
        # responses per iteration (16 prompts x 1 for ppo, 4 prompts x 4 for grpo and rloo)

Each configuration runs in its own process (so peak memory is its own), the configurations
alternate, and every figure is the median over the measured iterations after one warm-up
iteration. Responses stop at EOS as in training (few of 16 do within 32-48 tokens; resp_len
shows the mean), and tokens per second counts the tokens actually generated. wall_step_s (in each configuration's
JSON line) is the wall clock of a whole train_step, metric reductions included, as TRL's are timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def reward_model_dir() -> str:
    """The embedded backbone with a random scalar head, saved once: a 135M reward model to time (not to learn from)."""

    from rlhfkit.config import EMBEDDED_MODEL
    from rlhfkit.models import ScalarHeadModel, load_backbone, load_tokenizer
    from rlhfkit.models.loading import cache_root

    directory = cache_root() / "bench-random-reward-model"
    if not (directory / "reward.json").exists():
        tokenizer = load_tokenizer(EMBEDDED_MODEL)
        ScalarHeadModel(load_backbone(EMBEDDED_MODEL, tokenizer)).save(directory, tokenizer)
    return str(directory)


def one_configuration(
    mode: str,
    max_new_tokens: int,
    steps: int,
    dtype: str,
    reward: str,
    batch_size: int = 16,
    engine: str = "hf",
    command: str = "ppo",
    epochs: int = 4,
    mini_batch: int = 4,
    responses: int = 0,
) -> dict:
    """`command`=grpo: that command's defaults (COMMAND_DEFAULTS) on the first `batch_size` packaged prompts.

    A mode `COMMAND:MODE` overrides `command`; `responses` > 0 sets the prompts to responses / group size.
    """
    import torch

    from rlhfkit.assets import PROMPTS
    from rlhfkit.config import load_config
    from rlhfkit.configs.ppo import COMMAND_DEFAULTS
    from rlhfkit.data import load_records
    from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer

    if ":" in mode:
        command, mode = mode.split(":", 1)
    defaults = COMMAND_DEFAULTS.get(command, {})
    group_size = defaults.get("algorithm", {}).get("group_size", 1)
    batch_size = responses // group_size if responses else batch_size
    reward_settings = (
        ["reward.kind=model", f"reward.model={reward_model_dir()}"] if reward == "model" else [f"reward.kind={reward}"]
    )
    critic = "separate" if mode.endswith("-separate") else "shared"
    top_layers = int(mode.removeprefix("lora-top").removesuffix("-separate")) if mode.startswith("lora-top") else 0
    config = load_config(
        PPOConfig,
        overrides=[
            f"model.lora.enabled={'true' if mode.startswith('lora') else 'false'}",
            f"model.lora.top_layers={top_layers}",
            f"model.dtype={dtype}",
            f"generation.max_new_tokens={max_new_tokens}",
            f"train.batch_size={batch_size}",
            f"train.mini_batch_size={min(mini_batch, batch_size * group_size)}",
            f"generation.engine={engine}",
            f"train.ppo_epochs={epochs}",
            f"train.steps={steps + 1}",
            f"critic.kind={critic}",
            *reward_settings,
        ],
        base=defaults,
    )
    prompts = load_records(PROMPTS, "prompts", limit=batch_size) if command != "ppo" else None
    trainer = PPOTrainer(config, prompts=prompts, command=command)
    rows, wall = [], []
    for _ in range(steps + 1):
        started = time.perf_counter()
        metrics, *_ = trainer.train_step()
        wall.append(time.perf_counter() - started)
        rows.append(metrics)
    measured = rows[1:]
    keys = [
        "time/generate_s",
        "time/score_s",
        "time/update_s",
        "time/step_s",
        "throughput/tokens_per_s",
        "response/length_mean",
    ]
    result = {key: statistics.median(r[key] for r in measured) for key in keys}
    result.update(
        command=command,
        wall_step_s=statistics.median(wall[1:]),
        iterations_s=wall,
        mode=mode,
        dtype=dtype,
        engine=engine,
        max_new_tokens=max_new_tokens,
        threads=torch.get_num_threads(),
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3, help="measured iterations after one warm-up")
    parser.add_argument(
        "--modes",
        default="full,lora",
        help="comma-separated: full, lora, lora-topN (LoRA on the last N layers), "
        "each optionally -separate (a separate value model)",
    )
    parser.add_argument(
        "--reward",
        default="sentiment",
        help="sentiment (VADER), or model (a 135M reward model with a random head, as TRL is timed with)",
    )
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per iteration")
    parser.add_argument(
        "--responses", type=int, default=0, help="responses per iteration, every configuration (overrides --batch-size)"
    )
    parser.add_argument("--command", choices=("ppo", "grpo", "rloo"), default="ppo", help="whose defaults")
    parser.add_argument("--epochs", type=int, default=4, help="train.ppo_epochs")
    parser.add_argument("--mini-batch", type=int, default=4, help="responses per optimiser step")
    parser.add_argument("--engine", default="hf", help="generation.engine: hf or vllm")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the configurations this many times")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = one_configuration(
            args.child, args.max_new_tokens, args.steps, args.dtype, args.reward, args.batch_size, args.engine,
            args.command, args.epochs, args.mini_batch, args.responses,
        )  # fmt: skip
        print(json.dumps(result))
        return
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for mode in args.modes.split(","):
            started = time.time()
            child = [sys.executable, __file__, "--child", mode, "--max-new-tokens", str(args.max_new_tokens)]
            child += ["--steps", str(args.steps), "--dtype", args.dtype, "--reward", args.reward]
            child += ["--batch-size", str(args.batch_size), "--engine", args.engine, "--command", args.command]
            child += ["--epochs", str(args.epochs), "--mini-batch", str(args.mini_batch)]
            child += ["--responses", str(args.responses)]
            out = subprocess.run(child, check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["process_wall_s"] = time.time() - started
            results.setdefault(mode, []).append(result)
    print(
        f"{args.command} iteration: "
        f"{f'{args.responses} responses' if args.responses else f'{args.batch_size} prompts'} x "
        f"{args.max_new_tokens} new tokens, "
        f"{args.epochs} epochs, minibatch {args.mini_batch}, "
        f"{args.dtype}, reward {args.reward}, engine {args.engine}; medians of {args.steps} iterations"
    )
    print("mode                 generate_s  score_s  update_s  step_s  new_tok/s  resp_len  peak_RSS_GiB")
    for mode, runs in results.items():
        for r in runs:
            print(
                f"{mode:<20} {r['time/generate_s']:>10.1f} {r['time/score_s']:>8.1f} {r['time/update_s']:>9.1f} "
                f"{r['time/step_s']:>7.1f} {r['throughput/tokens_per_s']:>10.1f} {r['response/length_mean']:>9.1f} "
                f"{r['peak_rss_gib']:>13.2f}"
            )


if __name__ == "__main__":
    main()
