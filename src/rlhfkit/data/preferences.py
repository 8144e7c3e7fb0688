"""Preference records as sets of responses: their kind, the pairs they assert, their tokenisation.

Every preference record is a prompt with K responses listed best first (a comparison is
[chosen, rejected]); what differs per kind is which (winner, loser) pairs it asserts and what
its loss needs (a margin, a soft label, the index of the best). A reward model scores each
record's K sequences; `rows_by_record` lays those scores out as one (N, K_max) row per record.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhfkit.data.collate import tokenize_prompt_response
from rlhfkit.data.readers import read_located
from rlhfkit.data.records import detect_kind, from_trl, prompt_messages
from rlhfkit.errors import UserError

PREFERENCE_KINDS = ("comparisons", "rankings", "choices")


def preference_kind(source: str) -> str:
    """comparisons, rankings or choices: what the source's first record is (TRL's formats converted)."""
    name, rows = read_located(source)
    if not rows:
        raise UserError(f"{name}: expected comparison, ranking or choice records, found none")
    where, first = rows[0]
    if not isinstance(first, dict):
        raise UserError(f"{where}: expected a comparison, ranking or choice record (an object), got {first!r:.60}")
    found = detect_kind(from_trl(first, where))
    kind = "rankings" if found == "rankings_or_candidates" else found
    if kind not in PREFERENCE_KINDS:
        raise UserError(f"{where}: a reward model trains on comparisons, rankings or choices; this is a {kind} record")
    return kind


def responses_best_first(record: dict[str, Any], kind: str) -> list[str]:
    """The record's responses: [chosen, rejected] for a comparison, as listed otherwise."""
    return [record["chosen"], record["rejected"]] if kind == "comparisons" else list(record["responses"])


def preference_pairs(record: dict[str, Any], kind: str) -> list[tuple[int, int]]:
    """(winner, loser) indices into `responses_best_first` that the record asserts, for accuracy and calibration.

    A comparison with a soft label asserts the side its label leans to, and nothing at exactly 0.5.
    """
    if kind == "comparisons":
        label = record.get("label", 1.0)
        return [(1, 0)] if label < 0.5 else [(0, 1)] if label > 0.5 else []
    count = len(record["responses"])
    if kind == "rankings":
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    return [(record["best"], j) for j in range(count) if j != record["best"]]


def preference_loss_name(records: list[dict[str, Any]], kind: str, source: str) -> str:
    """The loss these records call for: bradley_terry, soft_bradley_terry (comparisons with a "label"),
    ranking or best_of_k; a soft label and a margin in one file are refused."""
    if kind == "rankings":
        return "ranking"
    if kind == "choices":
        return "best_of_k"
    with_label = any("label" in r for r in records)
    if with_label and any("margin" in r for r in records):
        raise UserError(f"{source}: records carry both 'label' (soft preference) and 'margin'; use one of them")
    return "soft_bradley_terry" if with_label else "bradley_terry"


def tokenize_preferences(
    tokenizer: Any, records: list[dict[str, Any]], kind: str, max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """Each record with its tokenised responses (best first) under "items"; and how many responses were cut."""
    tokenized, cut = [], 0
    for record in records:
        items = [
            tokenize_prompt_response(tokenizer, record, response, max_length)
            for response in responses_best_first(record, kind)
        ]
        cut += sum(item["truncated"] for item in items)
        tokenized.append({**record, "items": items})
    return tokenized, cut


def preference_targets(records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """(N,) tensors of what the preference losses read: margin, label, best, num_responses."""
    return {
        "margin": torch.tensor([float(r.get("margin", 0.0)) for r in records]),
        "label": torch.tensor([float(r.get("label", 1.0)) for r in records]),
        "best": torch.tensor([int(r.get("best", 0)) for r in records]),
        "num_responses": torch.tensor([len(r["items"]) for r in records]),
    }


def distinct_sequences(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """The distinct tokenised sequences of `records`, and per record the index of each of its responses.

    The pairs of a prompt share its responses (a ranking's K, comparisons drawn from one set), so
    evaluation scores each sequence once.
    """
    sequences: list[dict[str, Any]] = []
    index_of: dict[tuple[int, ...], int] = {}
    indices = []
    for record in records:
        for item in record["items"]:
            key = tuple(item["input_ids"])
            if key not in index_of:
                index_of[key] = len(sequences)
                sequences.append(item)
        indices.append([index_of[tuple(item["input_ids"])] for item in record["items"]])
    return sequences, indices


def rows_by_record(rows: list[torch.Tensor]) -> torch.Tensor:
    """(N, K_max) from N rows of K_n scores, zeros beyond each row's K_n (the losses read num_responses)."""
    width = max(len(row) for row in rows)
    return torch.stack([torch.cat([row, row.new_zeros(width - len(row))]) for row in rows])


def asserted_pairs(
    rewards: torch.Tensor, records: list[dict[str, Any]], kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M,) rewards of the winners and of the losers of every pair the records assert; rewards: (N, K_max)."""
    pairs = [
        (row, winner, loser) for row, record in enumerate(records) for winner, loser in preference_pairs(record, kind)
    ]
    rows, winners, losers = torch.tensor(pairs, dtype=torch.long, device=rewards.device).reshape(-1, 3).T
    return rewards[rows, winners], rewards[rows, losers]


def unique_prompts(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to `limit` distinct prompts (as prompt records) in order of first appearance."""
    seen, prompts = set(), []
    for record in records:
        key = repr(prompt_messages(record))
        if key not in seen:
            seen.add(key)
            prompts.append(
                {"prompt": record["prompt"]} if "prompt" in record else {"messages": prompt_messages(record)}
            )
        if len(prompts) == limit:
            break
    return prompts
