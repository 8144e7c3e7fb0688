"""`rlhfkit label --judge KIND`: turn candidates into preference records with a programmatic judge.

    1 load     candidates (prompt + "responses"), e.g. OUT/candidates.jsonl of `rlhfkit generate`
    2 score    every response with the judge: any reward source (sentiment, rouge, length,
               function, model), as `rlhfkit ppo` would score it
    3 label    comparisons (every pair of distinct responses), rankings or choices; with noise.temperature
               T > 0 sampled as from a noisy person, P(a ≻ b) = σ((s_a − s_b) / T) (`labeling.synthetic`)
    4 write    OUT/comparisons.jsonl | rankings.jsonl | choices.jsonl and summary.json

`--judge ai` (the RL stage of Constitutional AI, "RLAIF") compares every pair of distinct
responses with a judge model instead (rewards/ai_judge.py): comparisons with soft labels
P(chosen ≻ rejected), under the keys model.*, judge.* of `AILabelConfig`.

Ties without noise are skipped and counted; duplicate responses of one prompt are merged first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rlhfkit.config import REWARD_KINDS, add_config_arguments
from rlhfkit.configs.label import FORMATS, AILabelConfig, LabelConfig
from rlhfkit.data import load_records, prompt_text
from rlhfkit.errors import UserError
from rlhfkit.labeling.synthetic import distinct_responses, label_record
from rlhfkit.recipes.generate import output_directory, write_outputs
from rlhfkit.rewards import build_reward, checked_scores, validate_records_for_reward
from rlhfkit.rewards.ai_judge import (
    ai_comparisons,
    constitution_path,
    load_constitution,
    load_judge,
    position_bias,
)
from rlhfkit.runtime import run_config


def load_candidates(source: str) -> list[dict[str, Any]]:
    """The candidates records of data.train, each with its duplicate responses merged."""
    if not source:
        raise UserError(
            'data.train is required: a candidates file (prompt + "responses"), '
            "e.g. OUT/candidates.jsonl of `rlhfkit generate`"
        )
    return [distinct_responses(r) for r in load_records(source, "candidates")]


# ---------------------------------------------------------------------------
# The labellers: a reward source as the judge, or a judge model (--judge ai)
# ---------------------------------------------------------------------------


def label(config: LabelConfig) -> Path:
    """The Python API of `rlhfkit label --judge KIND`: writes config.out and returns the records file."""
    out = output_directory(config.out, "label")
    records = load_candidates(config.data.train)
    validate_records_for_reward(config.reward, records, config.data.train)
    judge = build_reward(config.reward, config.dtype)
    started = time.time()
    rng = random.Random(config.seed)
    labelled: list[dict[str, Any]] = []
    ties = too_few = 0
    for record in tqdm(records, desc=f"label: {config.reward.kind} judge", unit="prompt"):
        k = len(record["responses"])
        if k < 2:
            too_few += 1
            continue
        scores = checked_scores(judge, [prompt_text(record)] * k, record["responses"], [record] * k).tolist()
        new, skipped = label_record(record, scores, config.format, config.noise.temperature, config.reward.kind, rng)
        labelled += new
        ties += skipped
    if not labelled:
        raise UserError(
            f"{config.data.train}: the {config.reward.kind} judge produced no {config.format} "
            f"({ties} tied, {too_few} prompts with fewer than 2 distinct responses)"
        )
    path = out / f"{config.format}.jsonl"
    summary = {
        "judge": config.reward.kind,
        "format": config.format,
        "noise_temperature": config.noise.temperature,
        "candidates": len(records),
        "records": len(labelled),
        "ties_skipped": ties,
        "prompts_with_fewer_than_2_distinct_responses": too_few,
        "output": str(path),
    }
    write_outputs(out, config, {path.name: labelled}, summary, started)
    return path


def label_with_ai(config: AILabelConfig) -> Path:
    """The Python API of `rlhfkit label --judge ai`: every pair of distinct responses, soft-labelled by the judge."""
    out = output_directory(config.out, "label")
    principles = load_constitution(constitution_path(config.judge.constitution))
    records = load_candidates(config.data.train)
    pairs = [
        (r, r["responses"][a], r["responses"][b])
        for r in records
        for a, b in itertools.combinations(range(len(r["responses"])), 2)
    ]
    if not pairs:
        raise UserError(f"{config.data.train}: no prompt has two distinct responses to compare")
    judge_name = config.judge.model or config.model.name
    model, tokenizer = load_judge(judge_name, config.judge.labels)
    started = time.time()
    sources, firsts, seconds = (list(column) for column in zip(*pairs))
    comparisons = ai_comparisons(
        model,
        tokenizer,
        sources,
        firsts,
        seconds,
        principles,
        config.judge,
        config.model.dtype,
        random.Random(config.seed),
    )
    path = out / "comparisons.jsonl"
    summary = {
        "judge": "ai",
        "judge_model": judge_name,
        "candidates": len(records),
        "records": len(comparisons),
        "label_mean": sum(c["label"] for c in comparisons) / len(comparisons),
        **position_bias(comparisons),
        "output": str(path),
    }
    write_outputs(out, config, {path.name: comparisons}, summary, started)
    return path


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LabelConfig, resume=False)
    parser.add_argument(
        "--judge",
        choices=(*REWARD_KINDS, "ai"),
        help="the judge's kind (same as --set reward.kind=KIND); "
        "ai: a judge model's soft labels (keys: see docs/dpo-and-ai-feedback.md)",
    )
    parser.add_argument("--format", choices=FORMATS, help="records to write (same as --set format=...)")


def run(args: argparse.Namespace) -> Path:
    if args.judge == "ai":  # Constitutional AI's RL stage has its own keys (model.*, judge.*)
        if args.format not in (None, "comparisons"):
            raise UserError(f"--judge ai writes comparisons (with soft labels), not {args.format}")
        path = label_with_ai(run_config(AILabelConfig, args))
    else:
        args.set = [
            *([f"reward.kind={args.judge}"] if args.judge else []),
            *([f"format={args.format}"] if args.format else []),
            *args.set,
        ]
        path = label(run_config(LabelConfig, args))
    summary = json.loads((path.parent / "summary.json").read_text())
    print(
        f"rlhfkit label: {summary['records']} {path.stem} from {summary['candidates']} prompts "
        f"by the {summary['judge']} judge in {path}"
    )
    return path.parent
