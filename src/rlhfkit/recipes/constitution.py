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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.checkpoint import seed_everything
from rlhfkit.config import add_config_arguments, save_config
from rlhfkit.configs.constitution import ConstitutionConfig
from rlhfkit.data.records import Record, format_prompt, load_records, prompt_messages, prompt_text
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.recipes.generate import output_directory
from rlhfkit.rewards.ai_judge import Principle, constitution_path, load_constitution
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.runtime import Runtime, run_config
from rlhfkit.tracking import Tracker, plot_metrics, write_json_atomic, write_jsonl_atomic

Generate = Callable[[list[str]], list[str]]  # formatted model inputs -> decoded responses, one per input
FormatMessages = Callable[[list[dict[str, str]]], str]  # a conversation -> the model's input text (chat template)


# ---------------------------------------------------------------------------
# The conversations the model is asked to continue
# ---------------------------------------------------------------------------


def critique_messages(record: Record, response: str, principle: Principle) -> list[dict[str, str]]:
    """The prompt, the response to critique, and the principle's critique request as the next user turn."""
    return [
        *prompt_messages(record),
        {"role": "assistant", "content": response},
        {"role": "user", "content": principle.critique},
    ]


def revision_messages(record: Record, response: str, principle: Principle, critique: str) -> list[dict[str, str]]:
    """The critique conversation, the critique, and the principle's revision request as the next user turn."""
    return [
        *critique_messages(record, response, principle),
        {"role": "assistant", "content": critique},
        {"role": "user", "content": principle.revision},
    ]


def _final_text(chain: dict[str, Any]) -> str:
    """The last non-empty text of a chain: its final revision, an earlier one, or the first response."""
    texts = [chain["response"], *(round_["revision"] for round_ in chain["rounds"])]
    return next((text for text in reversed(texts) if text.strip()), "")


def critique_and_revise(
    records: list[Record],
    principles: list[Principle],
    revisions: int,
    generate: Generate,
    format_messages: FormatMessages,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Chains for one batch of prompt records: 1 + 2 * revisions batched `generate` calls in all.

    Returns, per record: {"prompt", "response", "rounds": [{"principle", "critique", "revision"}], "final"}.
    """
    responses = generate([format_messages(prompt_messages(r)) for r in records])
    chains: list[dict[str, Any]] = [
        {"prompt": prompt_text(r), "response": response, "rounds": []} for r, response in zip(records, responses)
    ]
    current = list(responses)
    for _ in range(revisions):
        sampled = [rng.choice(principles) for _ in records]
        critiques = generate(
            [format_messages(critique_messages(r, c, p)) for r, c, p in zip(records, current, sampled)]
        )
        current = generate(
            [format_messages(revision_messages(r, c, p, k)) for r, c, p, k in zip(records, current, sampled, critiques)]
        )
        for chain, principle, critique, revision in zip(chains, sampled, critiques, current):
            chain["rounds"].append({"principle": principle.name, "critique": critique, "revision": revision})
    for chain in chains:
        chain["final"] = _final_text(chain)
    return chains


def demonstration(record: Record, final: str) -> Record:
    """A demonstration record (the source's prompt fields + `response`) for `rlhfkit sft`."""
    if "prompt" in record:
        return {"prompt": record["prompt"], "response": final}
    return {"messages": [*prompt_messages(record), {"role": "assistant", "content": final}]}


def chain_metrics(chains: list[dict[str, Any]]) -> dict[str, float]:
    """A batch's response and final lengths in words, and the share of prompts whose text the rounds changed."""
    return {
        "constitution/response_words": sum(len(c["response"].split()) for c in chains) / len(chains),
        "constitution/final_words": sum(len(c["final"].split()) for c in chains) / len(chains),
        "constitution/changed_fraction": sum(c["final"] != c["response"] for c in chains) / len(chains),
    }


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
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    chains = revise_all(config, records, principles, generate, format_messages, out)
    plot_metrics(out / "metrics.jsonl", list(chain_metrics(chains)), out / "constitution.png")
    demonstrations = [demonstration(r, c["final"]) for r, c in zip(records, chains) if c["final"].strip()]
    path = out / "demonstrations.jsonl"
    write_jsonl_atomic(out / "chains.jsonl", chains)
    write_jsonl_atomic(path, demonstrations)
    summary = {
        "prompts": len(records),
        "demonstrations": len(demonstrations),
        "left_out_empty": len(records) - len(demonstrations),
        "revisions": config.critique.revisions,
        "principles": [p.name for p in principles],
        "changed_fraction": sum(c["final"] != c["response"] for c in chains) / max(1, len(chains)),
        "demonstrations_file": str(path),
    }
    write_json_atomic(out / "summary.json", summary)
    return path


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ConstitutionConfig, resume=False)


def run(args: argparse.Namespace) -> int:
    path = constitution(run_config(ConstitutionConfig, args))
    count = json.loads((path.parent / "summary.json").read_text())["demonstrations"]
    print(f"rlhfkit constitution: {count} demonstrations in {path}; next: rlhfkit sft --set data.train={path}")
    return 0
