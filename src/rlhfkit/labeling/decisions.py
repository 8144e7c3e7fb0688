"""What a labeller may answer, checked and resolved from display positions to response indices.

The page shows a task's responses in a random order, stored per labeller
(`display_order[position] = response index`). Answers arrive in display
terms ("A" is the response shown first; a ranking lists display positions,
best first) and are stored in response terms, so exports and agreement never
need to know what anyone was shown.

Two responses: "A", "B", "tie", "both_bad" or "skip" (a two-item ranking is
read as "A" or "B"). More: a ranking of all of them, "both_bad" (all bad)
or "skip".
"""

from __future__ import annotations

from dataclasses import dataclass

PAIR_CHOICES = ("A", "B", "tie", "both_bad", "skip")
MULTI_CHOICES = ("both_bad", "skip")
MAX_COMMENT_LENGTH = 5000


class InvalidJudgement(ValueError):
    """The answer does not fit the task (wrong choice for its size, a ranking that is not a permutation, ...)."""


@dataclass(frozen=True)
class Decision:
    choice: str  # "A", "B", "tie", "both_bad", "skip" or "ranking"
    ranking: tuple[int, ...] | None  # response indices, best first (for "A", "B" and "ranking")


def resolve(choice: str | None, ranking: list[int] | None, display_order: list[int]) -> Decision:
    """The stored form of an answer given in display terms; raises InvalidJudgement."""
    n = len(display_order)
    if (choice is None) == (ranking is None):
        raise InvalidJudgement("send exactly one of 'choice' and 'ranking'")
    if ranking is not None:
        if sorted(ranking) != list(range(n)):
            raise InvalidJudgement(
                f"'ranking' must list each display position 0..{n - 1} once, best first; got {ranking}"
            )
        resolved = tuple(display_order[position] for position in ranking)
        if n == 2:
            return Decision("A" if ranking[0] == 0 else "B", resolved)
        return Decision("ranking", resolved)
    assert choice is not None  # exactly one of the two was sent
    allowed = PAIR_CHOICES if n == 2 else MULTI_CHOICES
    if choice not in allowed:
        hint = "" if n == 2 else ", or send a 'ranking'"
        raise InvalidJudgement(
            f"'choice' for a task with {n} responses must be one of {', '.join(allowed)}{hint}; got {choice!r}"
        )
    if choice == "A":
        return Decision("A", (display_order[0], display_order[1]))
    if choice == "B":
        return Decision("B", (display_order[1], display_order[0]))
    return Decision(choice, None)
