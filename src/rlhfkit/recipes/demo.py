"""`rlhfkit demo`: the whole RLHF loop of the papers on the embedded model, with a report.

    1 generate   K candidate responses per prompt from the initial policy        (rlhfkit generate)
    2 label      each prompt's K candidates ranked by a gold judge with noise    (rlhfkit label)
                 (Plackett-Luce; Bradley-Terry for a pair), standing in for people
                 (Christiano et al. 2017's synthetic feedback);
                 the candidates of a share of the prompts are held out and labelled
                 without noise: the reward model's accuracy is measured on prompts it
                 never saw, against what the judge actually prefers
    3 rm         a LoRA reward model trained on those rankings with InstructGPT's (rlhfkit rm)
                 K-way loss: C(K,2) comparisons from K forward passes
    4 ppo        PPO against the learned reward model, not the judge,            (rlhfkit ppo)
                 with the KL penalty to the frozen initial policy
    5 evaluate   held-out prompts: gold score, learned reward, KL, win rate of the tuned policy
                 over the reference as the gold judge sees it, length, side-by-side samples
    6 report     report.md, summary.json and PNG plots

Each stage is the ordinary command writing into its own sub-directory, so every stage's output
follows the same contract as running it by hand. A stage whose summary.json exists is done and
skipped; one with a checkpoint resumes from it. Rerunning `rlhfkit demo --out DIR` after an
interruption therefore continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from rlhfkit.assets import EVAL_PROMPTS, PROMPTS
from rlhfkit.checkpoint import latest_checkpoint
from rlhfkit.cli import main
from rlhfkit.config import (
    EMBEDDED_MODEL,
    GenerationConfig,
    RewardConfig,
    add_config_arguments,
    config_from_args,
    field,
    resolve_precision,
    save_config,
)
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.actor_critic import response_logprobs
from rlhfkit.models.heads import check_pooling
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rewards import build_reward, checked_scores
from rlhfkit.rollout.experience import sequence_kl
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.tracking import new_figure, read_jsonl, write_json_atomic, write_jsonl_atomic


@dataclasses.dataclass
class DemoConfig:
    model: str = field(EMBEDDED_MODEL, "the initial policy (also the reward model's backbone and the reference)")
    prompts: str = field(str(PROMPTS), "training prompts")
    eval_prompts: str = field(str(EVAL_PROMPTS), "held-out prompts for the before/after evaluation")
    judge: str = field("sentiment", "the gold judge that stands in for people: sentiment, length, rouge or function")
    judge_function: str = field("", "package.module:function when judge=function")
    label_noise: float = field(
        0.05, "noise temperature T of the synthetic labels (Plackett-Luce rankings with weights exp(score/T))"
    )
    num_prompts: int = field(48, "prompts answered for the preference data")
    num_candidates: int = field(8, "candidate responses per prompt, ranked as one K-way ranking")
    max_new_tokens: int = field(32, "response length cap, in every stage")
    rm_steps: int = field(60, "reward-model optimiser steps")
    rm_batch_size: int = field(
        2, "rankings per reward-model step (each gives C(K,2) comparisons from K forward passes)"
    )
    rm_learning_rate: float = field(2e-4, "reward-model learning rate (LoRA)")
    rm_pooling: str = field(
        "mean",
        "where the reward head reads: mean (over the response tokens; learns the sentiment judge faster) or last",
    )
    rm_heldout_fraction: float = field(
        0.2, "share of the prompts whose candidates are held out, labelled without noise, to measure the reward model"
    )
    ppo_steps: int = field(12, "PPO iterations")
    ppo_batch_size: int = field(16, "prompts per PPO iteration")
    ppo_epochs: int = field(2, "PPO epochs per iteration")
    ppo_learning_rate: float = field(
        3e-4, "PPO learning rate (LoRA on the top layers: 1e-4 barely moved it, 4e-4 pushed KL past 5)"
    )
    ppo_top_layers: int = field(
        8, "LoRA on the policy's last N layers (0: all); the update then skips the frozen layers below"
    )
    kl_coef: float = field(0.05, "β of the KL penalty")
    num_eval_prompts: int = field(32, "held-out prompts in the evaluation")
    dtype: str = field("auto", "forward-pass precision: auto, float32 or bfloat16 (as model.dtype)")
    seed: int = field(0, "one seed for everything")
    out: str = field("", "output directory (default runs/demo-<time>)")

    def __post_init__(self) -> None:
        self.dtype = resolve_precision(self.dtype, "dtype")
        if self.judge not in ("sentiment", "length", "rouge", "function"):
            raise UserError(f"judge must be sentiment, length, rouge or function, got {self.judge!r}")
        if not 0 < self.rm_heldout_fraction < 1:
            raise UserError(f"rm_heldout_fraction must be in (0, 1), got {self.rm_heldout_fraction}")
        if self.label_noise <= 0:
            raise UserError(
                f"label_noise must be positive (noise-free rankings drop every prompt with tied scores), got {self.label_noise}"
            )
        if self.num_candidates < 2:
            raise UserError(f"num_candidates must be at least 2 to form pairs, got {self.num_candidates}")
        check_pooling(self.rm_pooling, "rm_pooling")
        if self.ppo_top_layers < 0:
            raise UserError(f"ppo_top_layers must be >= 0 (0: LoRA on every layer), got {self.ppo_top_layers}")
        if self.ppo_batch_size % 4:
            raise UserError(f"ppo_batch_size {self.ppo_batch_size} must be divisible by the PPO minibatch of 4")


# A tiny random model and small stages: the same pipeline in well under two minutes (what the tests run).
QUICK = {
    "num_prompts": 16, "num_candidates": 3, "max_new_tokens": 8, "rm_steps": 12, "rm_batch_size": 4,
    "ppo_steps": 3, "ppo_batch_size": 8, "ppo_epochs": 1, "ppo_top_layers": 1, "num_eval_prompts": 8,
}  # fmt: skip


def stage(name: str, out: Path, argv: list[str]) -> Path:
    """Run one `rlhfkit` command into out/name unless it already finished; resume it if it has a checkpoint."""

    directory = out / name
    if (directory / "summary.json").exists():
        print(f"rlhfkit demo: stage {name} already done, skipping", flush=True)
        return directory
    resume = ["--resume"] if latest_checkpoint(directory) is not None else []
    print(f"rlhfkit demo: stage {name}{' (resuming)' if resume else ''}", flush=True)
    code = main([*argv, "--out", str(directory), *resume])
    if code != 0:
        raise UserError(
            f"stage {name} failed (exit {code}); fix the cause above and rerun `rlhfkit demo --out {out}` to continue"
        )
    return directory


def split_candidates(candidates: Path, heldout_fraction: float, directory: Path) -> tuple[Path, Path]:
    """The candidates of the last `heldout_fraction` of the prompts (at least one) go to heldout.jsonl, the rest to train.jsonl."""

    train, heldout = directory / "train.jsonl", directory / "heldout.jsonl"
    if not heldout.exists():
        records = read_jsonl(candidates)
        if len(records) < 2:
            raise UserError(
                f"{candidates}: {len(records)} prompt(s) with candidates; the demo needs at least 2 to hold one out"
            )
        heldout_count = min(
            len(records) - 1, max(1, round(len(records) * heldout_fraction))
        )  # both sides keep a prompt
        cut = len(records) - heldout_count
        directory.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(train, records[:cut])
        write_jsonl_atomic(heldout, records[cut:])  # written last: its presence means the split is complete
    return train, heldout


def judge_settings(config: DemoConfig) -> list[str]:
    settings = [f"reward.kind={config.judge}"]
    if config.judge == "function":
        settings.append(f"reward.function={config.judge_function}")
    return settings


def run_pipeline(config: DemoConfig, out: Path) -> dict[str, Any]:
    model = config.model
    common = [f"model.dtype={config.dtype}", f"seed={config.seed}"]
    generated = stage("1-generate", out, ["generate", "--set", f"model.name={model}", f"data.prompts={config.prompts}", f"data.limit={config.num_prompts}",
                                          f"num_responses={config.num_candidates}", f"generation.max_new_tokens={config.max_new_tokens}", *common])  # fmt: skip
    train_candidates, heldout_candidates = split_candidates(
        generated / "candidates.jsonl", config.rm_heldout_fraction, out / "2-split"
    )
    labelled = stage("2-label", out, ["label", "--set", f"data.train={train_candidates}", "format=rankings", f"noise.temperature={config.label_noise}",
                                      f"seed={config.seed}", f"dtype={config.dtype}", *judge_settings(config)])  # fmt: skip
    heldout = stage("2-label-heldout", out, ["label", "--set", f"data.train={heldout_candidates}", "noise.temperature=0",
                                             f"dtype={config.dtype}", *judge_settings(config)])  # fmt: skip
    reward_model = stage("3-rm", out, ["rm", "--set", f"model.name={model}", "model.lora.enabled=true",
                                       f"data.train={labelled / 'rankings.jsonl'}", f"data.eval={heldout / 'comparisons.jsonl'}",
                                       f"train.steps={config.rm_steps}", f"train.batch_size={config.rm_batch_size}", f"optim.learning_rate={config.rm_learning_rate}", f"pooling={config.rm_pooling}",
                                       f"train.eval_every={config.rm_steps}", f"train.checkpoint_every={max(config.rm_steps // 2, 1)}",
                                       f"normalize.num_prompts={config.ppo_batch_size}", f"normalize.generation.max_new_tokens={config.max_new_tokens}", *common])  # fmt: skip
    policy = stage("4-ppo", out, ["ppo", "--set", f"model.name={model}", "model.lora.enabled=true", f"model.lora.top_layers={config.ppo_top_layers}", f"data.prompts={config.prompts}",
                                  "reward.kind=model", f"reward.model={reward_model / 'final'}", f"train.steps={config.ppo_steps}",
                                  f"train.batch_size={config.ppo_batch_size}", "train.mini_batch_size=4", f"train.ppo_epochs={config.ppo_epochs}",
                                  f"optim.learning_rate={config.ppo_learning_rate}", f"kl.coef={config.kl_coef}", f"generation.max_new_tokens={config.max_new_tokens}",
                                  f"train.checkpoint_every={max(config.ppo_steps // 4, 1)}", *common])  # fmt: skip
    return {"generate": generated, "label": labelled, "heldout": heldout, "rm": reward_model, "ppo": policy}


def evaluate(config: DemoConfig, stages: dict[str, Path], out: Path) -> dict[str, Any]:
    """Stage 5: the reference and the tuned policy answer the same held-out prompts."""

    path = out / "5-evaluate" / "evaluation.json"
    if path.exists():
        print("rlhfkit demo: stage 5-evaluate already done, skipping", flush=True)
        return json.loads(path.read_text())
    print("rlhfkit demo: stage 5-evaluate", flush=True)
    records = load_records(config.eval_prompts, "prompts")[: config.num_eval_prompts]
    prompts = [prompt_text(r) for r in records]
    tokenizer = load_tokenizer(config.model)
    reference = load_causal_lm(config.model, tokenizer).eval()
    tuned = load_causal_lm(str(stages["ppo"] / "final"), tokenizer).eval()
    gold = build_reward(RewardConfig(kind=config.judge, function=config.judge_function), config.dtype)
    learned = build_reward(RewardConfig(kind="model", model=str(stages["rm"] / "final")), config.dtype)
    generation = GenerationConfig(max_new_tokens=config.max_new_tokens)
    texts = [format_prompt(tokenizer, r) for r in records]
    results: dict[str, dict[str, Any]] = {}
    for name, model in (("reference", reference), ("tuned", tuned)):
        torch.manual_seed(config.seed + 1)
        samples = sample(model, tokenizer, texts, generation, config.dtype, keep_scores=True)
        responses = decode_responses(tokenizer, samples)
        batch = (samples.input_ids, samples.attention_mask, samples.response_ids, 1.0, config.dtype)
        ref_logprobs, _ = response_logprobs(reference, *batch)
        logprobs = (
            samples.logprobs if samples.logprobs is not None else response_logprobs(model, *batch)[0]
        )  # both in one precision
        kl = sequence_kl(
            logprobs.masked_fill(~samples.response_mask, 0.0),
            ref_logprobs.masked_fill(~samples.response_mask, 0.0),
            samples.response_mask,
        )
        results[name] = {
            "responses": responses,
            "gold": checked_scores(gold, prompts, responses, records),
            "learned": checked_scores(learned, prompts, responses, records),
            "kl": kl,
            "length": samples.response_mask.sum(-1).float(),
        }
    ref, new = results["reference"], results["tuned"]
    wins = (new["gold"] > ref["gold"]).float() + 0.5 * (new["gold"] == ref["gold"]).float()
    evaluation = {
        "num_prompts": len(records),
        "gold_before": float(ref["gold"].mean()),
        "gold_after": float(new["gold"].mean()),
        "learned_before": float(ref["learned"].mean()),
        "learned_after": float(new["learned"].mean()),
        "kl_final": float(new["kl"].mean()),
        "win_rate": float(wins.mean()),
        "length_before": float(ref["length"].mean()),
        "length_after": float(new["length"].mean()),
        "side_by_side": [
            {"prompt": p, "reference": a, "tuned": b, "gold_reference": float(ga), "gold_tuned": float(gb)}
            for p, a, b, ga, gb in zip(prompts, ref["responses"], new["responses"], ref["gold"], new["gold"])
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, evaluation)
    return evaluation


def plot_demo(config: DemoConfig, stages: dict[str, Path], out: Path) -> list[Path]:
    """Reward and gold score against step, KL against step, gold against KL (over-optimisation)."""

    metrics = read_jsonl(stages["ppo"] / "metrics.jsonl")
    samples = read_jsonl(stages["ppo"] / "samples.jsonl")
    gold = build_reward(RewardConfig(kind=config.judge, function=config.judge_function), config.dtype)
    by_prompt = {prompt_text(r): r for r in load_records(config.prompts, "prompts")}  # fields such as `reference`
    records = [by_prompt.get(s["prompt"], {"prompt": s["prompt"]}) for s in samples]
    gold_scores = checked_scores(
        gold, [s["prompt"] for s in samples], [s["response"] for s in samples], records
    ).tolist()
    gold_by_step: dict[int, list[float]] = {}
    for s, score in zip(samples, gold_scores):
        gold_by_step.setdefault(s["step"], []).append(score)
    steps = [m["step"] for m in metrics]
    learned = [m["reward/score_mean"] for m in metrics]
    kl = [m["kl/mean"] for m in metrics]
    gold = [sum(gold_by_step[s]) / len(gold_by_step[s]) for s in steps]
    paths = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        paths.append(out / name)

    fig, ax = new_figure(figsize=(5.5, 3.6))
    ax.plot(steps, learned, marker=".", label="learned reward (proxy)")
    ax.plot(steps, gold, marker=".", label=f"gold judge ({config.judge})")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("mean score of the batch")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "reward_vs_step.png")
    fig, ax = new_figure(figsize=(5.5, 3.6))
    ax.plot(steps, kl, marker=".", color="tab:red")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("KL(π ‖ π_ref) per response")
    ax.grid(alpha=0.3)
    save(fig, "kl_vs_step.png")
    fig, ax = new_figure(figsize=(5.5, 3.6))
    points = ax.scatter(kl, gold, c=steps, cmap="viridis", marker="o", label="gold judge")
    ax.scatter(kl, learned, c=steps, cmap="viridis", marker="^", alpha=0.6, label="learned reward")
    fig.colorbar(points, ax=ax, label="PPO step")
    ax.set_xlabel("KL(π ‖ π_ref) per response")
    ax.set_ylabel("mean score of the batch")
    ax.set_title("proxy vs gold as the policy moves away")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "gold_vs_kl.png")
    return paths


def write_report(
    config: DemoConfig,
    stages: dict[str, Path],
    evaluation: dict[str, Any],
    rm_summary: dict[str, Any],
    out: Path,
    wall_s: float,
) -> dict[str, Any]:
    summary = {
        "gold_before": evaluation["gold_before"],
        "gold_after": evaluation["gold_after"],
        "reward_model_accuracy": rm_summary["eval_accuracy"],
        "kl_final": evaluation["kl_final"],
        "win_rate": evaluation["win_rate"],
        "learned_before": evaluation["learned_before"],
        "learned_after": evaluation["learned_after"],
        "length_before": evaluation["length_before"],
        "length_after": evaluation["length_after"],
        "wall_s": wall_s,
    }
    rows = "\n".join(
        f"| {s['prompt']} | {s['reference']!s:.200} ({s['gold_reference']:+.2f}) | {s['tuned']!s:.200} ({s['gold_tuned']:+.2f}) |".replace(
            "\n", " "
        )
        for s in evaluation["side_by_side"][:6]
    )
    report = f"""# rlhfkit demo report

Model `{config.model}`; gold judge `{config.judge}` (label noise T={config.label_noise}); {evaluation["num_prompts"]} held-out prompts.

| figure | before (reference) | after (PPO) |
| --- | --- | --- |
| gold judge score, mean | {evaluation["gold_before"]:+.3f} | {evaluation["gold_after"]:+.3f} |
| learned reward, mean | {evaluation["learned_before"]:+.3f} | {evaluation["learned_after"]:+.3f} |
| response length (tokens) | {evaluation["length_before"]:.1f} | {evaluation["length_after"]:.1f} |

- Win rate of the tuned policy over the reference (gold judge, ties count half): **{evaluation["win_rate"]:.1%}**
- KL(π ‖ π_ref) per response on held-out prompts: **{evaluation["kl_final"]:.2f}** nats
- Reward model held-out accuracy: **{summary["reward_model_accuracy"]:.1%}** on {rm_summary["eval_pairs"]} pairs of prompts it never saw, labelled by the judge without noise
- Wall time: {wall_s / 60:.1f} min

![reward and gold score against step](reward_vs_step.png)
![KL against step](kl_vs_step.png)
![gold score against KL](gold_vs_kl.png)

## Side by side (held-out prompts; gold score in brackets)

| prompt | reference | tuned |
| --- | --- | --- |
{rows}

## Where everything is

| what | where |
| --- | --- |
| candidates | `{stages["generate"].name}/candidates.jsonl` |
| rankings (synthetic human feedback) | `{stages["label"].name}/rankings.jsonl` |
| held-out comparisons (no noise) | `{stages["heldout"].name}/comparisons.jsonl` |
| reward model | `{stages["rm"].name}/final/` (metrics in `{stages["rm"].name}/metrics.jsonl`) |
| tuned policy | `{stages["ppo"].name}/final/` (metrics, samples, TensorBoard in `{stages["ppo"].name}/`) |
| evaluation, all side-by-side samples | `5-evaluate/evaluation.json` |
"""
    (out / "report.md").write_text(report)
    write_json_atomic(out / "summary.json", summary)
    return summary


def accumulated_seconds(out: Path, seconds: float) -> float:
    """Wall time over every invocation on this directory (an interrupted run and its continuation)."""

    path = out / "wall_time.json"
    total = (json.loads(path.read_text())["wall_s"] if path.exists() else 0.0) + seconds
    write_json_atomic(path, {"wall_s": total})
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoConfig, resume=False)
    parser.add_argument(
        "--quick", action="store_true", help="the same pipeline on a tiny random model in under two minutes"
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(DemoConfig, args, base=dict(QUICK) if args.quick else None)
    out = Path(config.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.quick and config.model == EMBEDDED_MODEL:
        tiny = out / "tiny-model"
        if not (tiny / "config.json").exists():
            build_tiny_model(tiny, seed=config.seed)
        config = dataclasses.replace(config, model=str(tiny))
    save_config(config, out / "config.yaml")
    stages = run_pipeline(config, out)
    evaluation = evaluate(config, stages, out)
    rm_summary = json.loads((stages["rm"] / "summary.json").read_text())
    plot_demo(config, stages, out)
    summary = write_report(config, stages, evaluation, rm_summary, out, accumulated_seconds(out, time.time() - started))
    print(
        f"rlhfkit demo: gold {summary['gold_before']:+.3f} -> {summary['gold_after']:+.3f}, win rate {summary['win_rate']:.0%}, "
        f"KL {summary['kl_final']:.2f}, RM accuracy {summary['reward_model_accuracy']:.1%}; report in {out / 'report.md'}"
    )
    return 0
