"""PPO against GRPO, RLOO and REINFORCE++ at the same number of sampled tokens, on the embedded model.

    1 train     each variant by its ordinary command, each in its own process (so that its peak RSS is
                its own), with the same steps and response length and N responses per iteration:
                    ppo          N prompts x 1 response, a value head (GAE)
                    grpo         N/K prompts x K responses, `rlhfkit grpo` (KL as a k3 loss term)
                    rloo         N/K prompts x K responses, `rlhfkit rloo` (KL in the reward)
                    reinforce++  N/K prompts x K responses, `rlhfkit ppo --set algorithm.advantage=reinforce++`
                    reinforce++-baseline  the same with the group mean subtracted first
    2 evaluate  the base model and each final policy answer held-out prompts (never trained on): gold
                score (mean ± standard error) and KL(π‖π_base) = mean over answers of Σ_t log π − log π_base,
                by the yardstick of benchmarks/dpo_vs_ppo.py
    3 report    one JSON line per variant (gold, KL, s/iteration, generate and update s/iteration, peak RSS)
                and OUT/results.json

Tasks: `sentiment` (reward and gold: VADER on the packaged prompts, held out: eval_prompts.jsonl) or
`verifiable` (reward and gold: the answer checked against its reference; the packaged arithmetic
problems, the last --eval-prompts of them held out).

Usage:
    python benchmarks/critic_free.py --out runs/bench-critic-free [--steps 15] [--max-new-tokens 32]
    python benchmarks/critic_free.py --task verifiable --out runs/bench-critic-free-arithmetic
    python benchmarks/critic_free.py --tiny --steps 1 --out /tmp/bench-smoke     # a smoke check, any machine
Extra keys for every variant: --set model.lora.enabled=true model.lora.top_layers=8 ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

from dpo_vs_ppo import evaluate  # the held-out yardstick every benchmark shares
from rlhfkit.assets import ARITHMETIC, EVAL_PROMPTS
from rlhfkit.config import EMBEDDED_MODEL, GenerationConfig
from rlhfkit.data import load_records
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rewards import sentiment_reward
from rlhfkit.rewards.hacking import distinct_n
from rlhfkit.rewards.verifiable import verifiable_reward
from rlhfkit.tracking import read_jsonl


def variants(responses: int, group_size: int) -> dict[str, list[str]]:
    """name -> the command line (without the shared --set keys) that trains it on `responses` per iteration."""
    prompts = responses // group_size
    return {
        "ppo": ["ppo", "--set", f"train.batch_size={responses}"],
        "grpo": ["grpo", "--set", f"train.batch_size={prompts}", f"algorithm.group_size={group_size}"],
        "rloo": ["rloo", "--set", f"train.batch_size={prompts}", f"algorithm.group_size={group_size}"],
        "reinforce++": [
            "ppo", "--set", "algorithm.advantage=reinforce++", f"train.batch_size={prompts}",
            f"algorithm.group_size={group_size}",
        ],
        "reinforce++-baseline": [
            "ppo", "--set", "algorithm.advantage=reinforce++-baseline", f"train.batch_size={prompts}",
            f"algorithm.group_size={group_size}",
        ],
    }  # fmt: skip


def task_data(task: str, out: Path, eval_prompts: int) -> tuple[str, list[dict], object]:
    """(training prompts file, held-out records, gold reward) of the task."""
    if task == "sentiment":
        return "", load_records(EVAL_PROMPTS, "prompts", limit=eval_prompts), sentiment_reward()
    lines = ARITHMETIC.read_text().splitlines()
    train = out / "arithmetic_train.jsonl"
    train.write_text("\n".join(lines[:-eval_prompts]) + "\n")
    return str(train), [json.loads(line) for line in lines[-eval_prompts:]], verifiable_reward()


def train(name: str, command: list[str], shared: list[str], out: Path) -> dict:
    """Run one variant in its own process; its summary, per-iteration times and the process's peak RSS."""
    run = out / name
    if not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)  # an unfinished earlier attempt restarts cleanly
        process = subprocess.Popen([sys.executable, "-m", "rlhfkit", *command, *shared, "--out", str(run)])
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name}: rlhfkit {command[0]} exited {os.waitstatus_to_exitcode(status)}")
        (run / "peak_rss.json").write_text(json.dumps({"peak_rss_gib": usage.ru_maxrss / 2**20}))
    summary = json.loads((run / "summary.json").read_text())
    metrics = read_jsonl(run / "metrics.jsonl")

    def per_step(key: str) -> float:
        return sum(m[key] for m in metrics) / len(metrics)

    return {
        "s_per_iteration": summary["seconds_per_step"],
        "generate_s": per_step("time/generate_s"),
        "update_s": per_step("time/update_s"),
        "train_score_first": summary["score_first"],
        "train_score_last5": summary["score_last5_mean"],
        "train_kl_last": summary["kl_last"],
        **json.loads((run / "peak_rss.json").read_text()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-critic-free")
    parser.add_argument("--task", choices=("sentiment", "verifiable"), default="sentiment")
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (a smoke check, not a figure)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--responses", type=int, default=16, help="responses sampled per iteration, every variant")
    parser.add_argument("--group-size", type=int, default=4, help="K of the critic-free variants")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--per-prompt", type=int, default=2, help="held-out answers per prompt")
    parser.add_argument("--only", nargs="*", default=[], help="train and evaluate only these variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="extra keys for every variant")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.model = str(build_tiny_model(out / "tiny-model"))
    prompts_file, heldout, gold = task_data(args.task, out, args.eval_prompts)
    shared = [
        "--set", f"model.name={args.model}", f"train.steps={args.steps}", f"seed={args.seed}",
        f"generation.max_new_tokens={args.max_new_tokens}", "train.checkpoint_every=0", f"reward.kind={args.task}",
        *([f"data.prompts={prompts_file}"] if prompts_file else []), *args.set,
    ]  # fmt: skip
    chosen = {n: c for n, c in variants(args.responses, args.group_size).items() if not args.only or n in args.only}
    results: dict = {"settings": vars(args)}
    for name, command in chosen.items():
        results[name] = train(name, command, shared, out)

    generation = GenerationConfig(max_new_tokens=args.max_new_tokens)
    tokenizer = load_tokenizer(args.model)
    base = load_causal_lm(args.model, tokenizer).eval()
    for name in ("base", *chosen):
        policy = base if name == "base" else load_causal_lm(str(out / name / "final"), tokenizer).eval()
        torch.manual_seed(args.seed + 1)
        metrics, rows = evaluate(policy, base, tokenizer, heldout, args.per_prompt, generation, 32, gold)
        answers = [tokenizer(row["response"], add_special_tokens=False)["input_ids"] for row in rows]
        metrics["distinct_2"] = distinct_n(answers, 2)
        results.setdefault(name, {}).update(metrics)
        (out / f"heldout_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(json.dumps({"variant": name, **results[name]}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table({name: results[name] for name in ("base", *chosen)})
    plot_gold_against_kl({name: results[name] for name in ("base", *chosen)}, out / "gold_vs_kl.png")


def plot_gold_against_kl(rows: dict[str, dict], path: Path) -> None:
    """One point per variant: held-out gold (with its standard error) against KL to the base model."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    for name, r in rows.items():
        axes.errorbar(r["kl_mean"], r["gold_mean"], yerr=r["gold_stderr"], fmt="o", capsize=3, label=name)
    axes.set_xlabel("KL(policy || base), nats per answer")
    axes.set_ylabel("held-out gold score")
    axes.set_title("the same sampled tokens, 15 iterations")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def print_table(rows: dict[str, dict]) -> None:
    """gold ± s.e., KL, distinct-2 of the held-out answers, and for trained variants s/iteration, generate and
    update s/iteration, peak RSS."""
    header = f"{'variant':<21} {'gold':>15} {'KL':>6} {'dist-2':>6} {'s/iter':>7}"
    print(header + f" {'gen s':>6} {'upd s':>6} {'peak RSS GiB':>13}")
    for name, r in rows.items():
        timing = "".join(
            f" {r[key]:>{width}.{digits}f}" if key in r else f" {'-':>{width}}"
            for key, width, digits in (
                ("s_per_iteration", 7, 1), ("generate_s", 6, 1), ("update_s", 6, 1), ("peak_rss_gib", 13, 2),
            )
        )  # fmt: skip
        gold = f"{r['gold_mean']:>+9.3f}±{r['gold_stderr']:.3f}"
        print(f"{name:<21} {gold} {r['kl_mean']:>6.2f} {r['distinct_2']:>6.3f}{timing}")


if __name__ == "__main__":
    main()
