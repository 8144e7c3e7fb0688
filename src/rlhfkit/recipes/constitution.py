"""`rlhfkit constitution`: the supervised stage of Constitutional AI (Bai et al. 2022, sec. 3).

For every prompt:

    1. sample a response from the model;
    2. ask for a critique of it under a principle sampled from the constitution;
    3. ask for a revision under the same principle's revision request;
    4. repeat 2-3 `critique.revisions` times, each round revising the last revision;
    5. keep the final revision as a demonstration (prompt -> revision) for `rlhfkit sft`.

Every step is one batched generation over `critique.batch_size` prompts.

Departures from the paper: each round starts a fresh conversation (the
prompt, the current response, the request) instead of growing one
conversation with all earlier critiques, so inputs stay short for small
models; there are no few-shot examples. A prompt whose final text is empty
falls back to its last non-empty revision (or the first response); a prompt
with no non-empty text at all is left out of the demonstrations and counted.

Writes to the output directory: `demonstrations.jsonl`, `chains.jsonl` (every
response, critique and revision with its principle), `config.yaml`,
`metrics.jsonl` (one line per batch) and its plot `constitution.png`,
`summary.json`. The two JSONL files
appear only when the run completes (written under temporary names, then
renamed). There is no `--resume`: a run has no trained state to continue, and
a directory that holds a finished run is refused, as by `generate` and `label`.

The RL stage of Constitutional AI, a judge model labelling pairs of responses,
is `rlhfkit label --judge ai` (recipes/label.py, rewards/ai_judge.py).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from rlhfkit.checkpoint import seed_everything
from rlhfkit.config import add_config_arguments
from rlhfkit.configs.constitution import ConstitutionConfig
from rlhfkit.data.records import Record, format_prompt, load_records
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.recipes.generate import output_directory, write_outputs
from rlhfkit.rewards.ai_judge import Principle, constitution_path, load_constitution
from rlhfkit.rollout.critique import FormatMessages, Generate, chain_metrics, critique_and_revise, demonstration
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.runtime import Runtime, run_config
from rlhfkit.tracking import Tracker, plot_metrics


def load_generator(config: ConstitutionConfig) -> tuple[Generate, FormatMessages]:
    """The model's batched sampler and its chat formatter: the model loads here, before anything is written."""
    tokenizer = load_tokenizer(config.model.name)
    runtime = Runtime()
    model = load_causal_lm(config.model.name, tokenizer).eval().to(runtime.device)
    runtime.settle_precision(config.model, model)

    def generate(texts: list[str]) -> list[str]:
        return decode_responses(tokenizer, sample(model, tokenizer, texts, config.generation, config.model.dtype))

    def format_messages(messages: list[dict[str, str]]) -> str:
        return format_prompt(tokenizer, {"messages": messages})

    return generate, format_messages


def revise_all(
    config: ConstitutionConfig,
    records: list[Record],
    principles: list[Principle],
    generate: Generate,
    format_messages: FormatMessages,
    out: Path,
) -> list[dict[str, Any]]:
    """Chains for every record, `critique.batch_size` prompts at a time, with one metrics line per batch."""
    batch_size = config.critique.batch_size
    batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
    tracker = Tracker(out, len(batches), "constitution: critique and revise")
    rng = random.Random(config.seed)
    chains: list[dict[str, Any]] = []
    with torch.no_grad():
        for step, batch in enumerate(batches, start=1):
            new = critique_and_revise(batch, principles, config.critique.revisions, generate, format_messages, rng)
            tracker.log(step, chain_metrics(new))
            chains += new
    tracker.close()
    return chains


def constitution(config: ConstitutionConfig) -> Path:
    """The Python API of `rlhfkit constitution`: writes config.out and returns its demonstrations.jsonl."""
    out = output_directory(config.out, "constitution")  # 1. validate everything, and load the model, before any output
    principles = load_constitution(constitution_path(config.critique.constitution))
    records = load_records(config.data.prompts, "prompts", limit=config.data.limit or None)
    generate, format_messages = load_generator(config)
    seed_everything(config.seed)
    started = time.time()
    chains = revise_all(config, records, principles, generate, format_messages, out)
    plot_metrics(out / "metrics.jsonl", list(chain_metrics(chains)), out / "constitution.png")
    demonstrations = [demonstration(r, c["final"]) for r, c in zip(records, chains) if c["final"].strip()]
    path = out / "demonstrations.jsonl"
    summary = {
        "prompts": len(records),
        "demonstrations": len(demonstrations),
        "left_out_empty": len(records) - len(demonstrations),
        "revisions": config.critique.revisions,
        "principles": [p.name for p in principles],
        "changed_fraction": sum(c["final"] != c["response"] for c in chains) / max(1, len(chains)),
        "demonstrations_file": str(path),
    }
    write_outputs(out, config, {"chains.jsonl": chains, path.name: demonstrations}, summary, started)
    return path


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ConstitutionConfig, resume=False)


def run(args: argparse.Namespace) -> Path:
    path = constitution(run_config(ConstitutionConfig, args))
    count = json.loads((path.parent / "summary.json").read_text())["demonstrations"]
    print(f"rlhfkit constitution: {count} demonstrations in {path}; next: rlhfkit sft --set data.train={path}")
    return path.parent
