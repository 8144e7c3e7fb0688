"""Verifiable rewards: 1 when a response's final answer matches the prompt record's reference, else 0.

Reinforcement learning with verifiable rewards (Lambert et al. 2024, Tülu 3; DeepSeek-R1's rule-based
accuracy reward) replaces a learned reward model by a check that cannot be gamed by style: the answer
is right or it is not. Two checks, chosen by the reference:

- a numeric reference ("12", "-3.5", "1,000"): the last number in the response's final answer must
  lie within tolerance, |x - ref| <= tolerance * max(1, |ref|), so "The answer is 12." and
  "5 + 7 = 12" both score, and a float computed with rounding error still does;
- any other reference: exact match after normalisation (case, runs of whitespace, and punctuation
  at the ends of words, so a trailing period or quotes do not matter; SQuAD's normalisation
  without its removal of articles).

The final answer is the text after the last answer marker (`\\boxed{...}`, `####` as in GSM8K,
`answer:` or `answer is`), or the whole response when there is none.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from rlhfkit.errors import UserError

# An optional minus, an integer (optionally with thousands separators), an optional decimal part.
# In "5-3" the "-3" reads as a negative number; only the last number of an answer counts, so this rarely matters.
NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MARKER = re.compile(r"####|\banswer\s*(?:is\b|:)", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation stripped from the ends of each word, words joined by single spaces."""
    words = (word.strip(string.punctuation) for word in text.lower().split())
    return " ".join(word for word in words if word)


def final_answer(response: str) -> str:
    """The text after the last answer marker (the last `\\boxed{}` first), or the whole response, stripped."""
    boxed = _BOXED.findall(response)
    if boxed:
        return boxed[-1].strip()
    markers = list(_MARKER.finditer(response))
    return response[markers[-1].end() :].strip() if markers else response.strip()


def parse_number(text: str) -> float | None:
    """The number that `text` is, in full (a trailing period allowed, commas as thousands separators), or None."""
    text = text.strip().removesuffix(".")
    return float(text.replace(",", "")) if NUMBER.fullmatch(text) else None


def last_number(text: str) -> float | None:
    """The last number written in `text`, or None when it has none."""
    numbers = NUMBER.findall(text)
    return float(numbers[-1].replace(",", "")) if numbers else None


def is_correct(response: str, reference: str, tolerance: float) -> bool:
    """Whether the response's final answer matches the reference: numerically within tolerance, or exactly."""
    answer = final_answer(response)
    expected = parse_number(reference)
    if expected is None:
        return normalize_answer(answer) == normalize_answer(reference)
    found = last_number(answer)
    return found is not None and abs(found - expected) <= tolerance * max(1.0, abs(expected))


def reference_of(record: dict[str, Any], where: str) -> str:
    """The record's "reference" as text; UserError at `where` when it is missing or not a string or number."""
    reference = record.get("reference")
    if isinstance(reference, bool) or not isinstance(reference, str | int | float):
        found = "no 'reference'" if reference is None else f"'reference' {reference!r}"
        raise UserError(
            f"{where} has {found}; reward.kind=verifiable needs each prompt record to give its answer as "
            f'"reference": "..."'
        )
    return str(reference)


def check_references(records: Sequence[dict[str, Any]], source: str) -> None:
    """Every record has a usable reference, checked before any heavy work; errors name source and record (from 1)."""
    for number, record in enumerate(records, start=1):
        reference_of(record, f"{source}: record {number}")


def verifiable_reward(
    tolerance: float = 1e-6,
) -> Callable[[list[str], list[str], list[dict[str, Any]]], list[float]]:
    """A reward source `(prompts, responses, records) -> scores`: 1.0 for a correct final answer, 0.0 otherwise.

    tolerance is relative for references above 1 in magnitude and absolute below. A record without
    a reference raises UserError naming its position in `records` (from 1); check the whole prompt
    file with `check_references` before training instead, so the error names the file.
    """
    if tolerance < 0:
        raise UserError(f"the verifiable reward's tolerance must be >= 0, got {tolerance}")

    def score(prompts: list[str], responses: list[str], records: list[dict[str, Any]]) -> list[float]:
        references = [
            reference_of(record, f"prompt record {number} of {len(records)} in the batch")
            for number, record in enumerate(records, start=1)
        ]
        return [float(is_correct(response, reference, tolerance)) for response, reference in zip(responses, references)]

    return score
