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
`rlhfkit/reporting.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.checkpoint import latest_checkpoint
from rlhfkit.config import (
    EMBEDDED_MODEL,
    GenerationConfig,
    RewardConfig,
    add_config_arguments,
    save_config,
)
from rlhfkit.configs.demo import QUICK, DemoConfig, generate_config, label_config, ppo_config, rm_config
from rlhfkit.data import load_records
from rlhfkit.errors import UserError
from rlhfkit.models.loading import load_model_config
from rlhfkit.models.tiny import TINY_MODEL_LAYERS, build_tiny_model
from rlhfkit.recipes.generate import generate
from rlhfkit.recipes.label import label
from rlhfkit.recipes.ppo import PPOTrainer
from rlhfkit.recipes.reward import RewardModelTrainer
from rlhfkit.reporting import evaluate_policies, plot_demo, write_report, write_summary
from rlhfkit.rewards import build_reward
from rlhfkit.runtime import RunDirectory, run_config
from rlhfkit.tracking import read_jsonl, write_json_atomic, write_jsonl_atomic

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


def check_lora_depth(config: DemoConfig, depth: int) -> None:
    """rm_top_layers and ppo_top_layers within the model's depth, refused before stage 1 writes anything.

    LoRA refuses them when it is applied, but that is stage 3, after minutes of generating and labelling.
    """
    for key in ("rm_top_layers", "ppo_top_layers"):
        if getattr(config, key) > depth:
            raise UserError(f"{key} {getattr(config, key)} exceeds the {depth} layers of model {config.model}")


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
    """Stage 5 (reporting.evaluate_policies) into 5-evaluate/evaluation.json, unless it is there already."""
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
    config = run_config(DemoConfig, args, defaults=dict(QUICK) if args.quick else None)
    out = RunDirectory.resolve(config.out, "demo", resume=False).path
    tiny = out / "tiny-model"
    if args.quick and config.model == EMBEDDED_MODEL:
        config = dataclasses.replace(config, model=str(tiny))
    configs = stage_configs(config, out)  # before anything is written
    quick_model = config.model == str(tiny)  # built below, after the checks
    check_lora_depth(config, TINY_MODEL_LAYERS if quick_model else load_model_config(config.model).num_hidden_layers)
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    if quick_model and not (tiny / "config.json").exists():
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
