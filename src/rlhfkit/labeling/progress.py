"""Read-only views of the database: a labeller's progress, the admin's overview, the judgements themselves."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JudgementRow:
    """One stored judgement with what export and agreement need to know about its task."""

    id: int
    task_id: int
    record: dict[str, Any]  # the candidates record as given
    n_responses: int
    labeler: str
    choice: str  # "A", "B", "tie", "both_bad", "skip" or "ranking"
    ranking: tuple[int, ...] | None  # response indices, best first
    display_order: list[int]
    comment: str
    created_at: float


def labeler_progress(conn: sqlite3.Connection, labeler_id: int, judgements_per_task: int) -> dict[str, int]:
    """judged and skipped by this labeller; remaining: open tasks they have not answered."""
    judged, skipped = conn.execute(
        "SELECT count(*) FILTER (WHERE choice != 'skip'), count(*) FILTER (WHERE choice = 'skip') "
        "FROM judgements WHERE labeler_id = ?",
        (labeler_id,),
    ).fetchone()
    remaining = conn.execute(
        """SELECT count(*) FROM tasks t
           WHERE NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = t.id AND j.labeler_id = ?)
             AND (SELECT count(*) FROM judgements j WHERE j.task_id = t.id AND j.choice != 'skip') < ?""",
        (labeler_id, judgements_per_task),
    ).fetchone()[0]
    return {"judged": judged, "skipped": skipped, "remaining": remaining}


def admin_progress(conn: sqlite3.Connection, judgements_per_task: int) -> dict[str, Any]:
    """Totals over tasks and judgements, and one row per labeller."""
    tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    complete = conn.execute(
        "SELECT count(*) FROM tasks t "
        "WHERE (SELECT count(*) FROM judgements j WHERE j.task_id = t.id AND j.choice != 'skip') >= ?",
        (judgements_per_task,),
    ).fetchone()[0]
    leased = conn.execute(
        """SELECT count(*) FROM assignments a WHERE a.lease_expires > ?
           AND NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = a.task_id AND j.labeler_id = a.labeler_id)""",
        (time.time(),),
    ).fetchone()[0]
    labelers = [
        {
            "name": row["name"],
            "admin": bool(row["is_admin"]),
            "judged": row["judged"],
            "skipped": row["skipped"],
            "ties": row["ties"],
            "both_bad": row["both_bad"],
            "last_judged_at": row["last_judged_at"],
        }
        for row in conn.execute(
            """SELECT l.name, l.is_admin,
                      count(j.id) FILTER (WHERE j.choice != 'skip') AS judged,
                      count(j.id) FILTER (WHERE j.choice = 'skip') AS skipped,
                      count(j.id) FILTER (WHERE j.choice = 'tie') AS ties,
                      count(j.id) FILTER (WHERE j.choice = 'both_bad') AS both_bad,
                      max(j.created_at) AS last_judged_at
               FROM labelers l LEFT JOIN judgements j ON j.labeler_id = l.id
               GROUP BY l.id ORDER BY l.name"""
        )
    ]
    return {
        "tasks": tasks,
        "complete": complete,
        "judgements_per_task": judgements_per_task,
        "judgements": sum(row["judged"] for row in labelers),
        "skips": sum(row["skipped"] for row in labelers),
        "in_progress": leased,
        "labelers": labelers,
    }


def judgement_rows(conn: sqlite3.Connection) -> list[JudgementRow]:
    """Every judgement (skips included), oldest first."""
    rows = conn.execute(
        """SELECT j.id, j.task_id, t.record, t.n_responses, l.name, j.choice, j.ranking, a.display_order, j.comment,
                  j.created_at
           FROM judgements j
           JOIN tasks t ON t.id = j.task_id
           JOIN labelers l ON l.id = j.labeler_id
           JOIN assignments a ON a.task_id = j.task_id AND a.labeler_id = j.labeler_id
           ORDER BY j.id"""
    )
    return [
        JudgementRow(
            id=row["id"],
            task_id=row["task_id"],
            record=json.loads(row["record"]),
            n_responses=row["n_responses"],
            labeler=row["name"],
            choice=row["choice"],
            ranking=None if row["ranking"] is None else tuple(json.loads(row["ranking"])),
            display_order=json.loads(row["display_order"]),
            comment=row["comment"],
            created_at=row["created_at"],
        )
        for row in rows
    ]
