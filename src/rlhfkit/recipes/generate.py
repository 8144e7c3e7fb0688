"""`rlhfkit generate`: K sampled responses per prompt from any model, into OUT/candidates.jsonl.

    1 load     prompt records (prompt or messages, plus any extra keys such as reference)
    2 sample   batches of prompts, each repeated K times, with the configured temperature/top-k/top-p
    3 write    one candidates record per prompt: the prompt record as given + "responses": [...]

Responses that come back empty (the model stopped at once) cannot be compared, so they are
left out and counted in summary.json; a prompt left with no response is dropped and counted.
The candidates feed `rlhfkit label` (a judge), the labelling web app (people), or AI judges.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhfkit.checkpoint import seed_everything
from rlhfkit.config import add_config_arguments, save_config
from rlhfkit.configs.generate import GenerateConfig
from rlhfkit.data import format_prompt, load_records
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.rollout.engines import build_engine
from rlhfkit.rollout.generation import HF_ENGINE, GenerationEngine, decode_responses
from rlhfkit.runtime import RunDirectory, Runtime, run_config
from rlhfkit.tracking import write_json_atomic, write_jsonl_atomic


def candidates_record(record: dict[str, Any], responses: list[str]) -> dict[str, Any]:
    """The prompt record as given (prompt or messages, extra keys) with its non-empty responses."""
    return {**record, "responses": [r for r in responses if r.strip()]}


def generate_candidates(
    model: torch.nn.Module,
    tokenizer: Any,
    records: list[dict[str, Any]],
    config: GenerateConfig,
    engine: GenerationEngine = HF_ENGINE,
) -> list[list[str]]:
    """K responses per prompt record, in record order: (N,) lists of K strings, sampled by `engine`."""

    k = config.num_responses
    answers: list[list[str]] = []
    with tqdm(total=len(records) * k, desc=f"generate: {k} responses per prompt", unit="response") as progress:
        for start in range(0, len(records), config.batch_size):
            chunk = records[start : start + config.batch_size]
            texts = [format_prompt(tokenizer, record) for record in chunk for _ in range(k)]
            decoded = decode_responses(
                tokenizer, engine.sample(model, tokenizer, texts, config.generation, config.model.dtype)
            )
            answers += [decoded[i * k : (i + 1) * k] for i in range(len(chunk))]
            progress.update(len(texts))
    return answers


def output_directory(out: str, command: str) -> Path:
    """Where `generate`, `label` and `constitution` write: `out`, or runs/<command>-<time> as for every command.

    These commands have nothing to resume, so a directory that holds a finished run (its
    summary.json, written last) is refused rather than overwritten.
    """
    path = RunDirectory.resolve(out, command, resume=False).path
    if (path / "summary.json").exists():
        raise UserError(f"{path} already holds a finished {command} run; choose another --out")
    return path


def write_outputs(
    out: Path, config: Any, files: dict[str, list[dict[str, Any]]], summary: dict[str, Any], started: float
) -> None:
    """config.yaml, each records file OUT/<name>, then summary.json with the wall time since `started`: last,
    as its presence means the run finished."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    for name, records in files.items():
        write_jsonl_atomic(out / name, records)
    write_json_atomic(out / "summary.json", {**summary, "wall_s": time.time() - started})


def generate(config: GenerateConfig) -> Path:
    """The Python API of `rlhfkit generate`: writes config.out and returns its candidates.jsonl."""
    out = output_directory(config.out, "generate")
    records = load_records(config.data.prompts, "prompts", limit=config.data.limit or None)
    tokenizer = load_tokenizer(config.model.name)
    runtime = Runtime()
    model = load_causal_lm(config.model.name, tokenizer).eval().to(runtime.device)
    runtime.settle_precision(config.model, model)  # model.dtype=auto measured; config.yaml records the result
    engine = build_engine(config.generation, config.model.name, model, config.model.dtype)  # refused before output
    started = time.time()
    seed_everything(config.seed)
    answers = generate_candidates(model, tokenizer, records, config, engine)
    candidates = [candidates_record(record, responses) for record, responses in zip(records, answers)]
    kept = [c for c in candidates if c["responses"]]
    path = out / "candidates.jsonl"
    summary = {
        "prompts": len(records),
        "records": len(kept),
        "responses": sum(len(c["responses"]) for c in kept),
        "empty_responses_dropped": sum(len(a) for a in answers) - sum(len(c["responses"]) for c in candidates),
        "prompts_dropped": len(candidates) - len(kept),
        "candidates": str(path),
    }
    write_outputs(out, config, {path.name: kept}, summary, started)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, GenerateConfig, resume=False)


def run(args: argparse.Namespace) -> Path:
    path = generate(run_config(GenerateConfig, args))
    summary = json.loads((path.parent / "summary.json").read_text())
    print(f"rlhfkit generate: {summary['responses']} responses to {summary['records']} prompts in {path}")
    return path.parent
