"""Handing out tasks and taking judgements back.

A task is *open* while it has fewer than `judgements_per_task` real
judgements (a skip is not one). Handing out a task creates an assignment: the
order the labeller sees (shuffled once, then kept) and a lease. While the
lease runs, the task counts as taken by that labeller, so with one judgement
per task no two labellers hold it at once. Both the choice and the insert
happen inside one `BEGIN IMMEDIATE` transaction: two requests cannot both
see the same free task.

A labeller who asks again before answering gets the same task back (a page
reload does not reshuffle it or burn another task). A judgement is accepted
from anyone who was shown the task, even after their lease ran out: losing a
person's work is worse than an extra judgement.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from dataclasses import dataclass

from rlhfkit.data.records import prompt_text
from rlhfkit.labeling.db import immediate
from rlhfkit.labeling.decisions import Decision, resolve


class TaskNotFound(LookupError):
    pass


class NotShown(Exception):
    """The labeller answers a task that was never handed to them."""


class AlreadyJudged(Exception):
    pass


@dataclass(frozen=True)
class ShownTask:
    task_id: int
    prompt: str
    responses: list[str]  # in display order


# Open tasks this labeller has not answered and nobody else holds a live lease on, first loaded first.
_FREE_TASK = """
SELECT t.id FROM tasks t
WHERE NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = t.id AND j.labeler_id = :me)
  AND (SELECT count(*) FROM judgements j WHERE j.task_id = t.id AND j.choice != 'skip')
    + (SELECT count(*) FROM assignments a
       WHERE a.task_id = t.id AND a.labeler_id != :me AND a.lease_expires > :now
         AND NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = a.task_id AND j.labeler_id = a.labeler_id))
    < :per_task
ORDER BY t.id
LIMIT 1
"""

# This labeller's unanswered task with a live lease, if any.
_HELD_TASK = """
SELECT a.task_id FROM assignments a
WHERE a.labeler_id = :me AND a.lease_expires > :now
  AND NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = a.task_id AND j.labeler_id = a.labeler_id)
ORDER BY a.shown_at
LIMIT 1
"""


def next_task(
    conn: sqlite3.Connection, labeler_id: int, judgements_per_task: int, lease_seconds: float, rng: random.Random
) -> ShownTask | None:
    """The task this labeller should see now (leased to them), or None when none is left for them."""
    now = time.time()
    params = {"me": labeler_id, "now": now, "per_task": judgements_per_task}
    with immediate(conn):
        row = conn.execute(_HELD_TASK, params).fetchone() or conn.execute(_FREE_TASK, params).fetchone()
        if row is None:
            return None
        task_id = row[0]
        task = conn.execute("SELECT record, n_responses FROM tasks WHERE id = ?", (task_id,)).fetchone()
        shown = conn.execute(
            "SELECT display_order FROM assignments WHERE task_id = ? AND labeler_id = ?", (task_id, labeler_id)
        ).fetchone()
        if shown is None:
            order = list(range(task["n_responses"]))
            rng.shuffle(order)
            conn.execute(
                "INSERT INTO assignments (task_id, labeler_id, display_order, shown_at, lease_expires) "
                "VALUES (?, ?, ?, ?, ?)",
                (task_id, labeler_id, json.dumps(order), now, now + lease_seconds),
            )
        else:
            order = json.loads(shown["display_order"])
            conn.execute(
                "UPDATE assignments SET lease_expires = ? WHERE task_id = ? AND labeler_id = ?",
                (now + lease_seconds, task_id, labeler_id),
            )
    record = json.loads(task["record"])
    return ShownTask(task_id=task_id, prompt=prompt_text(record), responses=[record["responses"][i] for i in order])


def record_judgement(
    conn: sqlite3.Connection, labeler_id: int, task_id: int, choice: str | None, ranking: list[int] | None, comment: str
) -> int:
    """Store one answer (given in display terms); returns the judgement id.

    Raises TaskNotFound, NotShown, AlreadyJudged, or decisions.InvalidJudgement.
    """
    with immediate(conn):
        if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is None:
            raise TaskNotFound(f"no task {task_id}")
        shown = conn.execute(
            "SELECT display_order FROM assignments WHERE task_id = ? AND labeler_id = ?", (task_id, labeler_id)
        ).fetchone()
        if shown is None:
            raise NotShown(f"task {task_id} was not shown to you; GET /api/tasks/next first")
        if conn.execute(
            "SELECT 1 FROM judgements WHERE task_id = ? AND labeler_id = ?", (task_id, labeler_id)
        ).fetchone():
            raise AlreadyJudged(f"you already answered task {task_id}")
        decision: Decision = resolve(choice, ranking, json.loads(shown["display_order"]))
        cursor = conn.execute(
            "INSERT INTO judgements (task_id, labeler_id, choice, ranking, comment, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                task_id,
                labeler_id,
                decision.choice,
                None if decision.ranking is None else json.dumps(list(decision.ranking)),
                comment,
                time.time(),
            ),
        )
        assert cursor.lastrowid is not None  # set by every INSERT
        return cursor.lastrowid
