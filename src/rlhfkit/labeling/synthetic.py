"""A synthetic labeller: a judge's scores -> preference records, exact or sampled as from a noisy person.

With noise temperature T > 0 a pair is labelled as a noisy person would (Christiano et al. 2017):

    P(a ≻ b) = σ((s_a − s_b) / T)

and a ranking or a choice by its K-way generalisation (Plackett-Luce / softmax over s / T, drawn with
Gumbel noise), which is the same law for K = 2. At T = 0 the judge's exact order is used and a tie
says nothing (skipped, counted). Pure functions of the scores and an RNG: `rlhfkit label` applies
them to a file of candidates; an online loop can apply them to fresh samples.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any


def prefer_first(score_a: float, score_b: float, temperature: float, rng: random.Random) -> bool | None:
    """Whether a ≻ b: σ((s_a − s_b)/T)-distributed with T > 0; the higher score with T = 0, None on a tie."""
    if temperature > 0:
        return rng.random() < 1 / (1 + math.exp(-(score_a - score_b) / temperature))
    return None if score_a == score_b else score_a > score_b


def noisy_order(scores: list[float], temperature: float, rng: random.Random) -> list[int] | None:
    """Indices best first: by score at T = 0 (None if any two tie), else a Plackett-Luce draw with weights exp(s/T).

    Sorting s/T + Gumbel noise draws a Plackett-Luce ranking; its first element is a softmax(s/T) draw.
    """
    if temperature > 0:
        keys = [s / temperature - math.log(-math.log(rng.random() or 1e-300)) for s in scores]
        return sorted(range(len(scores)), key=lambda i: -keys[i])
    if len(set(scores)) < len(scores):
        return None
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def prompt_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Everything of a candidates record except its responses (prompt or messages, extra keys)."""
    return {key: value for key, value in record.items() if key not in ("responses", "best")}


def compare_pairs(
    record: dict[str, Any], scores: list[float], temperature: float, judge: str, rng: random.Random
) -> tuple[list[dict[str, Any]], int]:
    """A comparison for every pair of the record's responses that the judge separates; and the ties skipped."""
    responses, base = record["responses"], prompt_fields(record)
    labelled, ties = [], 0
    for a, b in itertools.combinations(range(len(responses)), 2):
        first = prefer_first(scores[a], scores[b], temperature, rng)
        if first is None:
            ties += 1
            continue
        winner, loser = (a, b) if first else (b, a)
        meta = {"judge": judge, "scores": [scores[winner], scores[loser]]}
        labelled.append({**base, "chosen": responses[winner], "rejected": responses[loser], "meta": meta})
    return labelled, ties


def label_record(
    record: dict[str, Any], scores: list[float], fmt: str, temperature: float, judge: str, rng: random.Random
) -> tuple[list[dict[str, Any]], int]:
    """Preference records from one candidates record (distinct responses) and the judge's scores; and ties skipped."""
    if fmt == "comparisons":
        return compare_pairs(record, scores, temperature, judge, rng)
    order = noisy_order(scores, temperature, rng)
    if order is None:
        return [], 1
    responses, base = record["responses"], prompt_fields(record)
    if fmt == "rankings":
        meta = {"judge": judge, "scores": [scores[i] for i in order]}
        return [{**base, "responses": [responses[i] for i in order], "meta": meta}], 0
    return [{**base, "responses": responses, "best": order[0], "meta": {"judge": judge, "scores": scores}}], 0


def distinct_responses(record: dict[str, Any]) -> dict[str, Any]:
    """The record with duplicate responses merged (first occurrence kept)."""
    return {**record, "responses": list(dict.fromkeys(record["responses"]))}
