"""`rlhfkit grpo` against TRL 1.12's GRPOTrainer on one workload, the two programs alternated in one run.

    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --iterations 4             # full fine-tuning
    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --iterations 4 --lora
    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --iterations 4 --lora --lora-top-layers 8
    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 3 --epochs 1 --mini-batch 16   # TRL's default shape
    .venv/bin/python benchmarks/grpo_vs_trl.py --rounds 1 --iterations 2 --max-new-tokens 8   # a smoke check
    .venv/bin/python benchmarks/grpo_vs_trl.py --lora --lora-top-layers 8 --trl-also-with MKL_CBWR=AVX2

`--trl-also-with KEY=VALUE` adds a third side: TRL with that environment variable set (rlhfkit sets
MKL_CBWR=AVX2 itself where it measures faster: runtime/kernels.py), so that a kernel choice rlhfkit
makes is not mistaken for a difference of the implementations.

Each round runs rlhfkit's side (benchmarks/ppo_step.py, `rlhfkit grpo`'s defaults, in rlhfkit's
.venv) and TRL's (benchmarks/trl_grpo_step.py, in the TRL venv its docstring makes, which also
states the workload and what matches), each in its own process so that its peak RSS is its own; the
order flips every round so that a drift in the machine's load falls on both. Each process reports
the median wall-clock seconds of its iterations after one warm-up iteration and its ru_maxrss. Printed:
one line per process, then the median over the rounds of each side, TRL's seconds over rlhfkit's
(issue 15's goal: at least 2) and rlhfkit's peak RSS over TRL's (goal: at most 1), and the whole as
one JSON line. Run it on a quiet machine: the two sides share nothing but the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUP_SIZE = 4  # `rlhfkit grpo`'s algorithm.group_size, K completions per prompt on both sides


def rlhfkit_command(args: argparse.Namespace) -> list[str]:
    mode = (f"lora-top{args.lora_top_layers}" if args.lora_top_layers else "lora") if args.lora else "full"
    return [
        sys.executable, str(HERE / "ppo_step.py"), "--child", mode, "--command", "grpo", "--reward", "sentiment",
        "--batch-size", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens),
        "--steps", str(args.iterations - 1), "--epochs", str(args.epochs), "--mini-batch", str(args.mini_batch),
        "--dtype", "float32", "--engine", "hf",
    ]  # fmt: skip


def trl_command(args: argparse.Namespace) -> list[str]:
    return [
        args.trl_python, str(HERE / "trl_grpo_step.py"), "--iterations", str(args.iterations),
        "--prompts", str(args.prompts), "--generations", str(GROUP_SIZE), "--max-new-tokens", str(args.max_new_tokens),
        "--epochs", str(args.epochs), "--mini-batch", str(args.mini_batch), *(["--lora"] if args.lora else []),
        "--lora-top-layers", str(args.lora_top_layers),
    ]  # fmt: skip


def measure(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one side in its own process: (median seconds per iteration, its iterations, peak RSS in GiB)."""
    done = subprocess.run(command, capture_output=True, text=True, env=None if env is None else {**os.environ, **env})
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{' '.join(command[:2])} exited {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["wall_step_s"] if "wall_step_s" in result else result["s_per_iteration"]
    return {"s_per_iteration": seconds, "iterations_s": result["iterations_s"], "peak_rss_gib": result["peak_rss_gib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="each round runs both sides once")
    parser.add_argument("--iterations", type=int, default=4, help="per process, the first one is warm-up")
    parser.add_argument("--prompts", type=int, default=4, help="P prompts per iteration, K=4 completions each")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="passes over each iteration's completions")
    parser.add_argument("--mini-batch", type=int, default=4, help="completions per optimiser step")
    parser.add_argument("--lora", action="store_true", help="LoRA at rlhfkit's model.lora defaults on both sides")
    parser.add_argument(
        "--lora-top-layers", type=int, default=0, help="with --lora: adapters on the last N layers only (0: all)"
    )
    parser.add_argument("--trl-python", default="/tmp/trl-venv/bin/python", help="the TRL venv's interpreter")
    parser.add_argument("--trl-also-with", metavar="KEY=VALUE", help="a third side: TRL with this variable set")
    args = parser.parse_args()
    sides = {"rlhfkit": rlhfkit_command(args), "trl": trl_command(args)}
    environments: dict[str, dict[str, str] | None] = {"rlhfkit": None, "trl": None}
    if args.trl_also_with:
        key, _, value = args.trl_also_with.partition("=")
        sides[f"trl {key}={value}"], environments[f"trl {key}={value}"] = trl_command(args), {key: value}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for name in order:
            run = measure(sides[name], environments[name])
            runs[name].append(run)
            iterations = ", ".join(f"{s:.2f}" for s in run["iterations_s"])
            print(
                f"round {round_index + 1} {name:<8} {run['s_per_iteration']:8.2f} s/iteration "
                f"(all: {iterations}; first is warm-up)  peak RSS {run['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in ("s_per_iteration", "peak_rss_gib")}
        for name, rows in runs.items()
    }
    speedup = medians["trl"]["s_per_iteration"] / medians["rlhfkit"]["s_per_iteration"]
    memory = medians["rlhfkit"]["peak_rss_gib"] / medians["trl"]["peak_rss_gib"]
    print(
        f"GRPO, {'LoRA' if args.lora else 'full fine-tuning'}: {args.prompts} prompts x {GROUP_SIZE} completions x "
        f"{args.max_new_tokens} new tokens, {args.epochs} epochs in minibatches of {args.mini_batch}; "
        f"medians of {args.rounds} rounds"
    )
    for name, m in medians.items():
        print(f"{name:<8} {m['s_per_iteration']:8.2f} s/iteration  peak RSS {m['peak_rss_gib']:.2f} GiB")
    print(f"TRL / rlhfkit seconds per iteration: {speedup:.2f}x (goal >= 2)")
    for name in [name for name in medians if name.startswith("trl ")]:
        ratio = medians[name]["s_per_iteration"] / medians["rlhfkit"]["s_per_iteration"]
        print(f"{name} / rlhfkit seconds per iteration: {ratio:.2f}x")
    print(f"rlhfkit / TRL peak RSS: {memory:.2f} (goal <= 1)")
    print(json.dumps({"settings": vars(args), "medians": medians, "speedup": speedup, "memory_ratio": memory}))


if __name__ == "__main__":
    main()
