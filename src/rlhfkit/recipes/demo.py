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

Each stage is the ordinary command's Python API (`generate`, `label`, `RewardModelTrainer`,
`PPOTrainer`) with a typed config built from the demo's, writing into its own sub-directory, so
every stage's output follows the same contract as running it by hand. A stage whose summary.json
exists is done and skipped; one with a checkpoint resumes from it. Rerunning `rlhfkit demo --out
DIR` after an interruption therefore continues where it stopped. Stages 5 and 6 live in
`recipes/demo_report.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.assets import EVAL_PROMPTS, PROMPTS
from rlhfkit.checkpoint import latest_checkpoint
from rlhfkit.config import (
    EMBEDDED_MODEL,
    GenerationConfig,
    LoRAConfig,
    ModelConfig,
    RewardConfig,
    add_config_arguments,
    check_precision,
    config_from_args,
    field,
    save_config,
)
from rlhfkit.data import load_records
from rlhfkit.errors import UserError
from rlhfkit.models.heads import check_pooling
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.recipes.demo_report import evaluate_policies, plot_demo, write_report, write_summary
from rlhfkit.recipes.generate import GenerateConfig, GenerateDataConfig, generate
from rlhfkit.recipes.label import LabelConfig, LabelDataConfig, NoiseConfig, label
from rlhfkit.recipes.ppo import PPOTrainer
from rlhfkit.recipes.ppo_config import KLConfig, PPOConfig, PPODataConfig, PPOTrainConfig
from rlhfkit.recipes.reward import NormalizeConfig, RewardModelTrainer, RMConfig, RMDataConfig, RMTrainConfig
from rlhfkit.rewards import build_reward
from rlhfkit.runtime import RunDirectory
from rlhfkit.tracking import read_jsonl, write_json_atomic, write_jsonl_atomic
from rlhfkit.training import OptimConfig


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
        self.dtype = check_precision(self.dtype, "dtype")
        if self.judge not in ("sentiment", "length", "rouge", "function"):
            raise UserError(f"judge must be sentiment, length, rouge or function, got {self.judge!r}")
        if not 0 < self.rm_heldout_fraction < 1:
            raise UserError(f"rm_heldout_fraction must be in (0, 1), got {self.rm_heldout_fraction}")
        if self.label_noise <= 0:
            raise UserError(
                f"label_noise must be positive (noise-free rankings drop every prompt with tied scores), "
                f"got {self.label_noise}"
            )
        if self.num_candidates < 2:
            raise UserError(f"num_candidates must be at least 2 to form pairs, got {self.num_candidates}")
        check_pooling(self.rm_pooling, "rm_pooling")
        if self.ppo_top_layers < 0:
            raise UserError(f"ppo_top_layers must be >= 0 (0: LoRA on every layer), got {self.ppo_top_layers}")

    @property
    def gold_judge(self) -> RewardConfig:
        """The judge that labels the preference data and scores the evaluation."""
        return RewardConfig(kind=self.judge, function=self.judge_function)


# A tiny random model and small stages: the same pipeline in well under two minutes (what the tests run).
QUICK = {
    "num_prompts": 16, "num_candidates": 3, "max_new_tokens": 8, "rm_steps": 12, "rm_batch_size": 4,
    "ppo_steps": 3, "ppo_batch_size": 8, "ppo_epochs": 1, "ppo_top_layers": 1, "num_eval_prompts": 8,
}  # fmt: skip


# ---------------------------------------------------------------------------
# 1-4: each stage's typed config, built from the demo's
# ---------------------------------------------------------------------------


def generate_config(config: DemoConfig, out: Path) -> GenerateConfig:
    return GenerateConfig(
        model=ModelConfig(name=config.model, dtype=config.dtype),
        data=GenerateDataConfig(prompts=config.prompts, limit=config.num_prompts),
        generation=GenerationConfig(max_new_tokens=config.max_new_tokens),
        num_responses=config.num_candidates,
        seed=config.seed,
        out=str(out),
    )


def label_config(config: DemoConfig, candidates: Path, fmt: str, noise: float, out: Path) -> LabelConfig:
    return LabelConfig(
        data=LabelDataConfig(train=str(candidates)),
        reward=config.gold_judge,
        format=fmt,
        noise=NoiseConfig(temperature=noise),
        dtype=config.dtype,
        seed=config.seed,
        out=str(out),
    )


def rm_config(config: DemoConfig, rankings: Path, heldout: Path, out: Path) -> RMConfig:
    """A LoRA reward model on the rankings, evaluated at the end on the held-out prompts' comparisons."""
    return RMConfig(
        model=ModelConfig(name=config.model, dtype=config.dtype, lora=LoRAConfig(enabled=True)),
        data=RMDataConfig(train=str(rankings), eval=str(heldout)),
        train=RMTrainConfig(
            steps=config.rm_steps,
            batch_size=config.rm_batch_size,
            eval_every=config.rm_steps,
            checkpoint_every=max(config.rm_steps // 2, 1),
        ),
        optim=OptimConfig(learning_rate=config.rm_learning_rate),
        pooling=config.rm_pooling,
        normalize=NormalizeConfig(
            num_prompts=config.ppo_batch_size, generation=GenerationConfig(max_new_tokens=config.max_new_tokens)
        ),
        seed=config.seed,
        out=str(out),
    )


def ppo_config(config: DemoConfig, reward_model: Path, out: Path) -> PPOConfig:
    """PPO with LoRA on the policy's top layers against the learned reward model (its minibatch derived)."""
    lora = LoRAConfig(enabled=True, top_layers=config.ppo_top_layers)
    return PPOConfig(
        model=ModelConfig(name=config.model, dtype=config.dtype, lora=lora),
        data=PPODataConfig(prompts=config.prompts),
        generation=GenerationConfig(max_new_tokens=config.max_new_tokens),
        reward=RewardConfig(kind="model", model=str(reward_model)),
        kl=KLConfig(coef=config.kl_coef),
        train=PPOTrainConfig(
            steps=config.ppo_steps,
            batch_size=config.ppo_batch_size,
            ppo_epochs=config.ppo_epochs,
            checkpoint_every=max(config.ppo_steps // 4, 1),
        ),
        optim=OptimConfig(learning_rate=config.ppo_learning_rate),
        seed=config.seed,
        out=str(out),
    )


# ---------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------


def stage(name: str, out: Path, work: Callable[[bool], object]) -> Path:
    """`work(resume)` into out/name unless it already finished (its summary.json); resume where it has a checkpoint."""
    directory = out / name
    if (directory / "summary.json").exists():
        print(f"rlhfkit demo: stage {name} already done, skipping", flush=True)
        return directory
    resume = latest_checkpoint(directory) is not None
    print(f"rlhfkit demo: stage {name}{' (resuming)' if resume else ''}", flush=True)
    try:
        work(resume)
    except UserError as error:
        raise UserError(
            f"stage {name}: {error}; fix the cause and rerun `rlhfkit demo --out {out}` to continue"
        ) from None
    return directory


def split_paths(directory: Path) -> tuple[Path, Path]:
    """The training and the held-out candidates that `split_candidates` writes into `directory`."""
    return directory / "train.jsonl", directory / "heldout.jsonl"


def split_candidates(candidates: Path, heldout_fraction: float, directory: Path) -> tuple[Path, Path]:
    """The candidates of the last `heldout_fraction` of the prompts go to heldout.jsonl, the rest to train.jsonl.

    Each side keeps at least one prompt.
    """
    train, heldout = split_paths(directory)
    if not heldout.exists():
        records = read_jsonl(candidates)
        if len(records) < 2:
            raise UserError(
                f"{candidates}: {len(records)} prompt(s) with candidates; the demo needs at least 2 to hold one out"
            )
        heldout_count = min(len(records) - 1, max(1, round(len(records) * heldout_fraction)))
        cut = len(records) - heldout_count
        directory.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(train, records[:cut])
        write_jsonl_atomic(heldout, records[cut:])  # written last: its presence means the split is complete
    return train, heldout


def stage_configs(config: DemoConfig, out: Path) -> dict[str, Any]:
    """Every stage's typed config, keyed by its directory under `out`: all built, so checked, before any stage runs."""
    train_candidates, heldout_candidates = split_paths(out / "2-split")
    rankings, heldout = out / "2-label" / "rankings.jsonl", out / "2-label-heldout" / "comparisons.jsonl"
    builders = {
        "1-generate": lambda: generate_config(config, out / "1-generate"),
        "2-label": lambda: label_config(config, train_candidates, "rankings", config.label_noise, out / "2-label"),
        "2-label-heldout": lambda: label_config(
            config, heldout_candidates, "comparisons", 0.0, out / "2-label-heldout"
        ),
        "3-rm": lambda: rm_config(config, rankings, heldout, out / "3-rm"),
        "4-ppo": lambda: ppo_config(config, out / "3-rm" / "final", out / "4-ppo"),
    }
    configs = {}
    for name, build in builders.items():
        try:
            configs[name] = build()
        except UserError as error:
            raise UserError(f"stage {name}: {error} (from the demo's settings)") from None
    return configs


def run_pipeline(config: DemoConfig, configs: dict[str, Any], out: Path) -> dict[str, Path]:
    """Stages 1-4 with their `stage_configs`; returns each stage's directory."""
    rm, ppo = configs["3-rm"], configs["4-ppo"]
    generated = stage("1-generate", out, lambda _: generate(configs["1-generate"]))
    split_candidates(generated / "candidates.jsonl", config.rm_heldout_fraction, out / "2-split")
    labelled = stage("2-label", out, lambda _: label(configs["2-label"]))
    heldout = stage("2-label-heldout", out, lambda _: label(configs["2-label-heldout"]))
    reward_model = stage("3-rm", out, lambda resume: RewardModelTrainer(rm).train(rm.out, resume=resume))
    policy = stage("4-ppo", out, lambda resume: PPOTrainer(ppo).train(ppo.out, resume=resume))
    return {"generate": generated, "label": labelled, "heldout": heldout, "rm": reward_model, "ppo": policy}


def evaluate(config: DemoConfig, stages: dict[str, Path], out: Path) -> dict[str, Any]:
    """Stage 5 (demo_report.evaluate_policies) into 5-evaluate/evaluation.json, unless it is there already."""
    path = out / "5-evaluate" / "evaluation.json"
    if path.exists():
        print("rlhfkit demo: stage 5-evaluate already done, skipping", flush=True)
        return json.loads(path.read_text())
    print("rlhfkit demo: stage 5-evaluate", flush=True)
    judges = {
        "gold": build_reward(config.gold_judge, config.dtype),
        "learned": build_reward(RewardConfig(kind="model", model=str(stages["rm"] / "final")), config.dtype),
    }
    evaluation = evaluate_policies(
        config.model,
        str(stages["ppo"] / "final"),
        load_records(config.eval_prompts, "prompts")[: config.num_eval_prompts],
        judges,
        GenerationConfig(max_new_tokens=config.max_new_tokens),
        config.dtype,
        config.seed,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, evaluation)
    return evaluation


def report(
    config: DemoConfig, stages: dict[str, Path], evaluation: dict[str, Any], out: Path, wall_s: float
) -> dict[str, Any]:
    """Stage 6: the plots, summary.json and report.md."""
    plot_demo(stages["ppo"], build_reward(config.gold_judge, config.dtype), config.judge, config.prompts, out)
    rm_summary = json.loads((stages["rm"] / "summary.json").read_text())
    summary = write_summary(evaluation, rm_summary["eval_accuracy"], wall_s, out)
    heading = f"Model `{config.model}`; gold judge `{config.judge}` (label noise T={config.label_noise})"
    write_report(heading, stages, summary, evaluation, rm_summary["eval_pairs"], out)
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
    out = RunDirectory.resolve(config.out, "demo", resume=False).path
    tiny = out / "tiny-model"
    if args.quick and config.model == EMBEDDED_MODEL:
        config = dataclasses.replace(config, model=str(tiny))
    configs = stage_configs(config, out)  # before anything is written
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    if config.model == str(tiny) and not (tiny / "config.json").exists():
        build_tiny_model(tiny, seed=config.seed)
    save_config(config, out / "config.yaml")
    stages = run_pipeline(config, configs, out)
    evaluation = evaluate(config, stages, out)
    summary = report(config, stages, evaluation, out, accumulated_seconds(out, time.time() - started))
    print(
        f"rlhfkit demo: gold {summary['gold_before']:+.3f} -> {summary['gold_after']:+.3f}, "
        f"win rate {summary['win_rate']:.0%}, KL {summary['kl_final']:.2f}, "
        f"RM accuracy {summary['reward_model_accuracy']:.1%}; report in {out / 'report.md'}"
    )
    return 0
