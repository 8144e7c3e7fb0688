"""Answers in display terms -> stored in response terms."""

from __future__ import annotations

import pytest

from rlhfkit.labeling.decisions import Decision, InvalidJudgement, resolve


def test_pair_choices_resolve_through_the_order_shown():
    # shown: position 0 is response 1, position 1 is response 0
    assert resolve("A", None, [1, 0]) == Decision("A", (1, 0))
    assert resolve("B", None, [1, 0]) == Decision("B", (0, 1))
    assert resolve("A", None, [0, 1]) == Decision("A", (0, 1))
    assert resolve("tie", None, [1, 0]) == Decision("tie", None)
    assert resolve("both_bad", None, [1, 0]) == Decision("both_bad", None)
    assert resolve("skip", None, [1, 0]) == Decision("skip", None)


def test_a_two_item_ranking_is_read_as_a_choice():
    assert resolve(None, [1, 0], [1, 0]) == Decision("B", (0, 1))
    assert resolve(None, [0, 1], [1, 0]) == Decision("A", (1, 0))


def test_a_ranking_maps_display_positions_to_responses():
    # shown order [2, 0, 1]: positions 0, 1, 2 show responses 2, 0, 1; best first: position 1, 2, 0
    assert resolve(None, [1, 2, 0], [2, 0, 1]) == Decision("ranking", (0, 1, 2))
    assert resolve("both_bad", None, [2, 0, 1]) == Decision("both_bad", None)


@pytest.mark.parametrize(
    "choice, ranking, order, message",
    [
        ("A", None, [0, 1, 2], "must be one of both_bad, skip, or send a 'ranking'"),
        ("tie", None, [0, 1, 2], "must be one of both_bad, skip"),
        ("C", None, [0, 1], "must be one of A, B, tie, both_bad, skip; got 'C'"),
        (None, [0, 0, 1], [0, 1, 2], "each display position 0..2 once"),
        (None, [0, 1], [0, 1, 2], "each display position 0..2 once"),
        (None, [0, 3, 1], [0, 1, 2], "each display position 0..2 once"),
        ("A", [0, 1], [0, 1], "exactly one of"),
        (None, None, [0, 1], "exactly one of"),
    ],
)
def test_answers_that_do_not_fit_the_task_are_refused(choice, ranking, order, message):
    with pytest.raises(InvalidJudgement, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(choice, ranking, order)
