"""The online loop's rounds on the labelling server: its pairs as tasks, its judgements back, its progress shown.

`rlhfkit loop --server URL` (an admin's token) drives these admin routes:

    PUT /api/admin/loop/{run}/rounds/{round}          {"needed": n, "records": [candidates]} -> tasks
    GET /api/admin/loop/{run}/rounds/{round}          {"needed", "tasks", "judged", "comparisons": [...]}
    PUT /api/admin/loop/{run}/rounds/{round}/summary  the round's figures (reward-model accuracy, gold score)
    GET /api/admin/loop                               every round of every loop, for the admin page

A round's records become ordinary tasks (labellers see nothing new), each tagged with
`"loop": {"run", "round"}` so that the same pair in two rounds is two tasks; pushing a round again
adds nothing (tasks are keyed by content). Two tables beside the schema's, created on first use,
say which tasks belong to which round, how many judgements the round needs and its summary.
`judged` counts judgements other than skips; ties and "both bad" count, though they give no
comparison record, since the labeller has answered.
"""

# no `from __future__ import annotations`: the routes' parameters are annotated with the app's dependency
# types, passed in as values, which FastAPI must see evaluated

import json
import sqlite3
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.data.records import VALIDATORS
from rlhfkit.errors import UserError
from rlhfkit.labeling.db import immediate
from rlhfkit.labeling.export import build_export
from rlhfkit.labeling.progress import judgement_rows
from rlhfkit.labeling.tasks import MAX_RESPONSES, Candidate, add_tasks

LOOP_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS loop_rounds (
        run        TEXT NOT NULL,
        round      INTEGER NOT NULL,
        needed     INTEGER NOT NULL,
        summary    TEXT,                   -- the round's figures as JSON, once the loop has finished the round
        updated_at REAL NOT NULL,
        PRIMARY KEY (run, round))""",
    """CREATE TABLE IF NOT EXISTS loop_tasks (
        run     TEXT NOT NULL,
        round   INTEGER NOT NULL,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        PRIMARY KEY (run, round, task_id))""",
)
RunName = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
RoundNumber = Annotated[int, Path(ge=1, le=1_000_000)]
MAX_ROUND_RECORDS = 1000


class RoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    needed: int = Field(ge=1, le=MAX_ROUND_RECORDS)
    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROUND_RECORDS)


def ensure_tables(conn: sqlite3.Connection) -> None:
    with immediate(conn):
        for statement in LOOP_SCHEMA:
            conn.execute(statement)


def round_candidates(run: str, round_number: int, records: list[dict[str, Any]]) -> list[Candidate]:
    """The records as tasks of this round (tagged with it); a bad record is a ValueError naming it."""
    candidates = []
    for number, record in enumerate(records, start=1):
        where = f"record {number}"
        try:
            VALIDATORS["candidates"](record, where)
        except UserError as error:
            raise ValueError(str(error)) from None
        responses = record["responses"]
        if not 2 <= len(responses) <= MAX_RESPONSES or len(set(responses)) < len(responses):
            raise ValueError(f"{where}: expected 2 to {MAX_RESPONSES} different responses")
        candidates.append(Candidate({**record, "loop": {"run": run, "round": round_number}}, f"loop {run}:{where}"))
    return candidates


def add_round(conn: sqlite3.Connection, run: str, round_number: int, needed: int, records: list[dict]) -> int:
    """Tasks for the round's records and the round's row; returns how many tasks are new."""
    candidates = round_candidates(run, round_number, records)
    added = add_tasks(conn, candidates)
    hashes = [c.content_hash for c in candidates]
    with immediate(conn):
        marks = ",".join("?" * len(hashes))
        ids = [row[0] for row in conn.execute(f"SELECT id FROM tasks WHERE content_hash IN ({marks})", hashes)]
        conn.executemany(
            "INSERT OR IGNORE INTO loop_tasks (run, round, task_id) VALUES (?, ?, ?)",
            [(run, round_number, task_id) for task_id in ids],
        )
        conn.execute(
            "INSERT INTO loop_rounds (run, round, needed, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run, round) DO UPDATE SET needed = excluded.needed, updated_at = excluded.updated_at",
            (run, round_number, needed, time.time()),
        )
    return added


def round_rows(conn: sqlite3.Connection, run: str | None = None, round_number: int | None = None) -> list[dict]:
    """Rounds with their task and judgement counts (all rounds, one run's, or one), newest first."""
    rows = conn.execute(
        """SELECT r.run, r.round, r.needed, r.summary, r.updated_at,
                  (SELECT count(*) FROM loop_tasks lt WHERE lt.run = r.run AND lt.round = r.round) AS tasks,
                  (SELECT count(*) FROM loop_tasks lt JOIN judgements j ON j.task_id = lt.task_id
                   WHERE lt.run = r.run AND lt.round = r.round AND j.choice != 'skip') AS judged
           FROM loop_rounds r
           WHERE (:run IS NULL OR r.run = :run) AND (:round IS NULL OR r.round = :round)
           ORDER BY r.updated_at DESC, r.round DESC""",
        {"run": run, "round": round_number},
    )
    return [
        {
            "run": row["run"],
            "round": row["round"],
            "needed": row["needed"],
            "tasks": row["tasks"],
            "judged": row["judged"],
            "waiting": max(0, row["needed"] - row["judged"]),
            "summary": None if row["summary"] is None else json.loads(row["summary"]),
        }
        for row in rows
    ]


def round_comparisons(conn: sqlite3.Connection, run: str, round_number: int) -> list[dict[str, Any]]:
    """The comparison records of the round's judgements (ties, "both bad" and skips left out, as in export)."""
    task_ids = {
        row[0]
        for row in conn.execute("SELECT task_id FROM loop_tasks WHERE run = ? AND round = ?", (run, round_number))
    }
    rows = [row for row in judgement_rows(conn) if row.task_id in task_ids]
    return build_export(rows, keep_ties=False, keep_both_bad=False).comparisons


def loop_routes(connection: Any, admin: Any) -> APIRouter:
    """The admin routes above; `connection` and `admin` are the app's dependencies (a DB, an admin)."""
    router = APIRouter(prefix="/api/admin/loop")

    @router.get("")
    def all_rounds(me: admin, conn: connection) -> dict[str, Any]:
        ensure_tables(conn)
        return {"rounds": round_rows(conn)}

    @router.put("/{run}/rounds/{round_number}")
    def push_round(run: RunName, round_number: RoundNumber, body: RoundIn, me: admin, conn: connection) -> dict:
        ensure_tables(conn)
        try:
            added = add_round(conn, run, round_number, body.needed, body.records)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return {"added": added, **round_rows(conn, run, round_number)[0]}

    @router.get("/{run}/rounds/{round_number}")
    def get_round(run: RunName, round_number: RoundNumber, me: admin, conn: connection) -> dict[str, Any]:
        ensure_tables(conn)
        found = round_rows(conn, run, round_number)
        if not found:
            raise HTTPException(404, f"loop {run} has no round {round_number} on this server")
        return {**found[0], "comparisons": round_comparisons(conn, run, round_number)}

    @router.put("/{run}/rounds/{round_number}/summary", status_code=204)
    def put_summary(run: RunName, round_number: RoundNumber, body: dict[str, Any], me: admin, conn: connection) -> None:
        ensure_tables(conn)
        with immediate(conn):
            updated = conn.execute(
                "UPDATE loop_rounds SET summary = ?, updated_at = ? WHERE run = ? AND round = ?",
                (json.dumps(body), time.time(), run, round_number),
            ).rowcount
        if not updated:
            raise HTTPException(404, f"loop {run} has no round {round_number} on this server")

    return router
