"""Agreement between labellers, worked out by hand."""

from __future__ import annotations

import pytest

from rlhfkit.labeling.agreement import agreement, verdicts
from rlhfkit.labeling.progress import JudgementRow


def row(task_id, labeler, choice, ranking, n=2):
    return JudgementRow(0, task_id, {}, n, labeler, choice, ranking, list(range(n)), "", 0.0)


def test_verdicts_per_response_pair():
    assert verdicts("B", (1, 0), 2) == {(0, 1): "second"}
    assert verdicts("tie", None, 2) == {(0, 1): "tie"}
    assert verdicts("ranking", (2, 0, 1), 3) == {(0, 1): "first", (0, 2): "second", (1, 2): "second"}
    assert verdicts("both_bad", None, 3) == {(0, 1): "both_bad", (0, 2): "both_bad", (1, 2): "both_bad"}


def test_agreement_over_tasks_judged_by_two_or_more():
    rows = [
        # task 1: ann and bob say response 0, carol says response 1 -> ann-bob agree, the others disagree
        row(1, "ann", "A", (0, 1)),
        row(1, "bob", "B", (0, 1)),
        row(1, "carol", "B", (1, 0)),
        # task 2: a tie against a preference -> disagree
        row(2, "ann", "tie", None),
        row(2, "bob", "A", (1, 0)),
        # task 3: rankings 0>1>2 and 0>2>1 -> pairs (0,1) and (0,2) agree, (1,2) does not: 2 of 3
        row(3, "ann", "ranking", (0, 1, 2), n=3),
        row(3, "bob", "ranking", (0, 2, 1), n=3),
        # task 4: one judgement and a skip -> not compared
        row(4, "ann", "A", (0, 1)),
        row(4, "bob", "skip", None),
    ]
    result = agreement(rows)
    # compared pairs: task 1: 3 labeller pairs x 1, task 2: 1, task 3: 3 -> 7; agreed: 1 + 0 + 2 = 3
    assert result["tasks"] == 3
    assert (result["compared"], result["agreed"]) == (7, 3)
    assert result["rate"] == pytest.approx(3 / 7, abs=1e-12)
    assert result["by_pair"] == [
        {"labelers": ["ann", "bob"], "tasks": 3, "compared": 5, "agreed": 3, "rate": pytest.approx(0.6, abs=1e-12)},
        {"labelers": ["ann", "carol"], "tasks": 1, "compared": 1, "agreed": 0, "rate": 0.0},
        {"labelers": ["bob", "carol"], "tasks": 1, "compared": 1, "agreed": 0, "rate": 0.0},
    ]


def test_no_shared_task_gives_no_rate():
    assert agreement([row(1, "ann", "A", (0, 1)), row(2, "bob", "A", (0, 1))]) == {
        "tasks": 0,
        "compared": 0,
        "agreed": 0,
        "rate": None,
        "by_pair": [],
    }
