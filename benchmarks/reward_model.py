"""A reward model learns the sentiment judge's preferences from the embedded model's own answers.

    rlhfkit generate   K answers of the embedded SmolLM2-135M-Instruct to the shipped training prompts
                       and, separately, to the held-out eval prompts
    rlhfkit label      sentiment (VADER) judge -> training rankings of each prompt's K answers, with
                       Plackett-Luce label noise; held-out comparisons without noise, ties skipped
    rlhfkit rm         a LoRA reward model (embedded backbone) on the training rankings (InstructGPT's
                       K-way loss), evaluated on the comparisons of prompts it never saw

Prints the figures and the exact commands as a Markdown section for benchmarks/RESULTS.md.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_model.py [--out runs/bench-rm] [--steps 60]
(on a shared, oversubscribed machine one torch thread per process is several times faster than two:
OpenMP threads spin while waiting for a core).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rlhfkit.assets import EVAL_PROMPTS, PROMPTS


def run(command: list[str]) -> float:
    """Run one rlhfkit command; returns its wall-clock seconds."""
    print("$ " + shlex.join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-rm")
    parser.add_argument("--train-prompts", type=int, default=64)
    parser.add_argument("--eval-prompts", type=int, default=16)
    parser.add_argument("--responses", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--noise", type=float, default=0.05, help="label noise temperature of the training rankings")
    parser.add_argument(
        "--reuse-data",
        action="store_true",
        help="keep candidates and labels already under --out (their time is taken from their summary.json)",
    )
    parser.add_argument("--batch-size", type=int, default=2, help="rankings per step")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--normalize-prompts", type=int, default=16)
    parser.add_argument(
        "--pooling", default="last", help="where the reward head reads: last (token) or mean (over the response)"
    )
    args = parser.parse_args()

    out = Path(args.out)
    rlhfkit = str(Path(sys.executable).with_name("rlhfkit"))
    sampling = [
        f"num_responses={args.responses}",
        "batch_size=16",
        f"generation.max_new_tokens={args.tokens}",
        "model.dtype=float32",
    ]
    commands = {
        "generate (train prompts)": [
            rlhfkit,
            "generate",
            "--set",
            f"data.prompts={PROMPTS}",
            f"data.limit={args.train_prompts}",
            *sampling,
            f"out={out}/gen-train",
        ],
        "generate (eval prompts)": [
            rlhfkit,
            "generate",
            "--set",
            f"data.prompts={EVAL_PROMPTS}",
            f"data.limit={args.eval_prompts}",
            "seed=1",
            *sampling,
            f"out={out}/gen-eval",
        ],
        "label (train)": [
            rlhfkit,
            "label",
            "--judge",
            "sentiment",
            "--format",
            "rankings",
            "--set",
            f"data.train={out}/gen-train/candidates.jsonl",
            f"noise.temperature={args.noise}",
            f"out={out}/label-train",
        ],
        "label (eval)": [
            rlhfkit,
            "label",
            "--judge",
            "sentiment",
            "--set",
            f"data.train={out}/gen-eval/candidates.jsonl",
            f"out={out}/label-eval",
        ],
        "rm": [
            rlhfkit,
            "rm",
            "--set",
            f"data.train={out}/label-train/rankings.jsonl",
            f"data.eval={out}/label-eval/comparisons.jsonl",
            "model.lora.enabled=true",
            f"train.steps={args.steps}",
            f"train.batch_size={args.batch_size}",
            f"train.eval_every={max(1, args.steps // 3)}",
            f"optim.learning_rate={args.learning_rate}",
            f"pooling={args.pooling}",
            "model.dtype=float32",
            f"normalize.num_prompts={args.normalize_prompts}",
            f"normalize.generation.max_new_tokens={args.tokens}",
            f"out={out}/rm",
        ],
    }
    seconds = {}
    for name, command in commands.items():
        stage = Path(command[-1].partition("=")[2])
        reused = args.reuse_data and name != "rm" and (stage / "summary.json").is_file()
        seconds[name] = json.loads((stage / "summary.json").read_text())["wall_s"] if reused else run(command)
    label_train = json.loads((out / "label-train" / "summary.json").read_text())
    label_eval = json.loads((out / "label-eval" / "summary.json").read_text())
    rm = json.loads((out / "rm" / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "rm" / "metrics.jsonl").read_text().splitlines()]
    curve = ", ".join(f"{m['step']}: {m['eval/accuracy']:.3f}" for m in metrics if m.get("eval/accuracy") is not None)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")

    lines = [
        "## Reward models and SFT (issue 3)",
        "",
        "Reward model learns the sentiment judge from the embedded model's answers "
        f"({time.strftime('%Y-%m-%d')}, CPU: 2 cores, load average {os.getloadavg()[0]:.1f} at the end, "
        f"OMP_NUM_THREADS={threads}).",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| candidates | {args.train_prompts} train prompts + {args.eval_prompts} held-out prompts "
        f"× {args.responses} answers of ≤ {args.tokens} tokens (embedded SmolLM2-135M-Instruct) |",
        f"| labels (sentiment judge) | {label_train['records']} training rankings of {args.responses} "
        f"(Plackett-Luce noise T = {args.noise}); {label_eval['records']} held-out comparisons, all pairs, "
        f"no noise ({label_eval['ties_skipped']} tied pairs skipped) |",
        f"| reward model | embedded backbone, LoRA r 16, {args.pooling} pooling, {rm['steps']} steps "
        f"× {args.batch_size} rankings, lr {args.learning_rate}, K-way ranking loss |",
        f"| held-out accuracy (prompts never trained on) | **{rm['eval_accuracy']:.3f}** "
        f"on {rm['eval_pairs']} pairs (chance 0.5) |",
        f"| held-out mean margin r_w − r_l / ECE | {rm['eval_margin']:.3f} / {rm['eval_ece']:.3f} |",
        f"| held-out accuracy during training (step: acc) | {curve} |",
        f"| normalisation (reference = embedded model, {rm['reference_responses']} answers) "
        f"| raw mean {rm['reference_raw_mean']:.3f}, std {rm['reference_raw_std']:.3f} "
        f"→ gain {rm['gain']:.3f}, bias {rm['bias']:.3f} |",
        "| time | "
        + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
        + f"; total {sum(seconds.values()) / 60:.1f} min |",
        "",
        "Commands (`benchmarks/reward_model.py` runs them in order):",
        "",
        "```",
        *[shlex.join(["rlhfkit", *command[1:]]) for command in commands.values()],
        "```",
        "",
    ]
    text = "\n".join(lines)
    (out / "RESULTS-section.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
