"""Agreement between labellers on the tasks that two or more of them judged.

Every judgement is read as a verdict on each pair of responses (i, j), i < j:
"first" (i better), "second" (j better), "tie" or "both_bad". A two-response
task has one pair; a ranking of K gives K(K-1)/2 verdicts; "all bad" on K
responses says "both_bad" for every pair. Two labellers agree on a pair when
their verdicts are equal; the rate is agreements over compared pairs, over
all pairs of labellers who judged the same task. Skips are not judgements.
This is raw percent agreement, not corrected for chance (Cohen's kappa).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from rlhfkit.labeling.progress import JudgementRow


@dataclass
class Tally:
    tasks: int = 0
    compared: int = 0
    agreed: int = 0

    def as_dict(self) -> dict[str, Any]:
        rate = self.agreed / self.compared if self.compared else None
        return {"tasks": self.tasks, "compared": self.compared, "agreed": self.agreed, "rate": rate}


def verdicts(choice: str, ranking: tuple[int, ...] | None, n_responses: int) -> dict[tuple[int, int], str]:
    """The judgement as one verdict per response pair (i, j), i < j."""
    pairs = list(combinations(range(n_responses), 2))
    if choice in ("tie", "both_bad"):
        return {pair: choice for pair in pairs}
    assert ranking is not None, f"a {choice!r} judgement carries a ranking"
    place = {response: position for position, response in enumerate(ranking)}
    return {(i, j): "first" if place[i] < place[j] else "second" for i, j in pairs}


def agreement(rows: Iterable[JudgementRow]) -> dict[str, Any]:
    """Overall agreement and one entry per pair of labellers, over tasks judged by two or more."""
    by_task: dict[int, list[JudgementRow]] = defaultdict(list)
    for row in rows:
        if row.choice != "skip":
            by_task[row.task_id].append(row)
    overall = Tally()
    by_pair: dict[tuple[str, str], Tally] = defaultdict(Tally)
    for judgements in by_task.values():
        if len(judgements) < 2:
            continue
        overall.tasks += 1
        for first, second in combinations(sorted(judgements, key=lambda row: row.labeler), 2):
            mine = verdicts(first.choice, first.ranking, first.n_responses)
            theirs = verdicts(second.choice, second.ranking, second.n_responses)
            agreed = sum(mine[pair] == theirs[pair] for pair in mine)
            tally = by_pair[(first.labeler, second.labeler)]
            tally.tasks += 1
            for target in (tally, overall):
                target.compared += len(mine)
                target.agreed += agreed
    return {
        **overall.as_dict(),
        "by_pair": [{"labelers": list(names), **tally.as_dict()} for names, tally in sorted(by_pair.items())],
    }
