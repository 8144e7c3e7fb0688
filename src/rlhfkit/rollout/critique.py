"""Constitutional AI's supervised stage as a sampling procedure (Bai et al. 2022, sec. 3): critique, revise, repeat.

Each round asks the model for a critique of the current response under a principle sampled from the
constitution, then for a revision under that principle's revision request, each as a fresh
conversation (the prompt, the current response, the request). Pure given `generate` (batched
sampling) and an RNG: `rlhfkit constitution` runs it over its prompts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from rlhfkit.data.records import Record, prompt_messages, prompt_text
from rlhfkit.rewards.ai_judge import Principle

Generate = Callable[[list[str]], list[str]]  # formatted model inputs -> decoded responses, one per input
FormatMessages = Callable[[list[dict[str, str]]], str]  # a conversation -> the model's input text (chat template)


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
