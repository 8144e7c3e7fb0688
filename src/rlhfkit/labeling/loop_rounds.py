"""The online loop's rounds on the labelling server: its pairs as tasks, its judgements back, its progress shown.

`rlhfkit loop --server URL` (an admin's token) drives these admin routes:

    PUT /api/admin/loop/{run}/rounds/{round}          {"needed": n, "records": [candidates]} -> tasks
    GET /api/admin/loop/{run}/rounds/{round}          {"needed", "tasks", "judged", "comparisons": [...]}
    PUT /api/admin/loop/{run}/rounds/{round}/summary  the round's figures (reward-model accuracy, gold score)
    GET /api/admin/loop                               every round of every loop, for the admin page

A record may carry `"media": [digest, ...]`, one per response: animations uploaded before the
round (`rlhfkit gym` with people as the labeller: each trajectory segment as a GIF), which the
labelling page shows in place of the response's text:

    PUT /api/admin/loop/media/{sha256}                a GIF, stored under the SHA-256 of its bytes
    GET /api/loop/media/{sha256}                      the GIF, to any signed-in labeller
    GET /api/loop/tasks/{task}/media                  {"media": {response text: its GIF's URL}} ({} if none)

A round's records become ordinary tasks (labellers see nothing new), each tagged with
`"loop": {"run", "round"}` so that the same pair in two rounds is two tasks; pushing a round again
adds nothing (tasks are keyed by content). Three tables beside the schema's, created on first use,
say which tasks belong to which round, how many judgements the round needs, its summary, and the animations.
`judged` counts judgements other than skips; ties and "both bad" count, though they give no
comparison record (a tie does with `?keep_ties=true`: label 0.5), since the labeller has answered.
"""

# no `from __future__ import annotations`: the routes' parameters are annotated with the app's dependency
# types, passed in as values, which FastAPI must see evaluated

import hashlib
import json
import re
import sqlite3
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
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
    """CREATE TABLE IF NOT EXISTS loop_media (
        digest     TEXT PRIMARY KEY,       -- SHA-256 of content, hex
        content    BLOB NOT NULL,          -- a GIF
        created_at REAL NOT NULL)""",
)
RunName = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
RoundNumber = Annotated[int, Path(ge=1, le=1_000_000)]
DIGEST = re.compile(r"^[0-9a-f]{64}$")
Digest = Annotated[str, Path(pattern=DIGEST.pattern)]
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
MAX_ROUND_RECORDS = 1000


class RoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    needed: int = Field(ge=1, le=MAX_ROUND_RECORDS)
    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROUND_RECORDS)


def ensure_tables(conn: sqlite3.Connection) -> None:
    with immediate(conn):
        for statement in LOOP_SCHEMA:
            conn.execute(statement)


def check_media(conn: sqlite3.Connection, record: dict[str, Any], where: str) -> None:
    """ValueError unless the record's `media` (if any) names one uploaded animation per response."""
    if "media" not in record:
        return
    media = record["media"]
    if (
        not isinstance(media, list)
        or len(media) != len(record["responses"])
        or not all(isinstance(digest, str) and DIGEST.match(digest) for digest in media)
    ):
        raise ValueError(f"{where}: 'media' must list one SHA-256 (64 hex digits) per response")
    missing = [d for d in media if conn.execute("SELECT 1 FROM loop_media WHERE digest = ?", (d,)).fetchone() is None]
    if missing:
        raise ValueError(f"{where}: media {missing[0]} is not on the server; upload it first (PUT .../media/DIGEST)")


def round_candidates(
    conn: sqlite3.Connection, run: str, round_number: int, records: list[dict[str, Any]]
) -> list[Candidate]:
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
        check_media(conn, record, where)
        candidates.append(Candidate({**record, "loop": {"run": run, "round": round_number}}, f"loop {run}:{where}"))
    return candidates


def add_round(conn: sqlite3.Connection, run: str, round_number: int, needed: int, records: list[dict]) -> int:
    """Tasks for the round's records and the round's row; returns how many tasks are new."""
    candidates = round_candidates(conn, run, round_number, records)
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


def round_comparisons(
    conn: sqlite3.Connection, run: str, round_number: int, keep_ties: bool = False
) -> list[dict[str, Any]]:
    """The comparison records of the round's judgements ("both bad", skips and, unless kept, ties left out)."""
    task_ids = {
        row[0]
        for row in conn.execute("SELECT task_id FROM loop_tasks WHERE run = ? AND round = ?", (run, round_number))
    }
    rows = [row for row in judgement_rows(conn) if row.task_id in task_ids]
    return build_export(rows, keep_ties=keep_ties, keep_both_bad=False).comparisons


def task_media(conn: sqlite3.Connection, task_id: int) -> dict[str, str]:
    """{response text: its animation's URL} of a task whose record carries `media` ({} for a task without)."""
    row = conn.execute("SELECT record FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no task {task_id}")
    record = json.loads(row["record"])
    media = record.get("media")
    if not isinstance(media, list) or len(media) != len(record["responses"]):
        return {}
    return {
        text: f"/api/loop/media/{digest}"
        for text, digest in zip(record["responses"], media)
        if isinstance(digest, str) and DIGEST.match(digest)
    }


def loop_routes(connection: Any, admin: Any) -> APIRouter:
    """The routes above; `connection` and `admin` are the app's dependencies (a DB, an admin)."""
    router = APIRouter()
    router.include_router(_round_routes(connection, admin))
    router.include_router(_media_routes(connection, admin))
    return router


def _media_routes(connection: Any, admin: Any) -> APIRouter:
    """Uploading an animation (admins), and fetching it and a task's list of them (every signed-in labeller).

    The guard has authenticated every /api/ request before it gets here.
    """
    router = APIRouter(prefix="/api")

    @router.put("/admin/loop/media/{digest}", status_code=204)
    async def put_media(digest: Digest, request: Request, me: admin, conn: connection) -> None:
        content = await request.body()
        if hashlib.sha256(content).hexdigest() != digest:
            raise HTTPException(422, "the body's SHA-256 is not the digest in the path")
        if not content.startswith(GIF_SIGNATURES):
            raise HTTPException(415, "media must be GIF images")
        ensure_tables(conn)
        with immediate(conn):
            conn.execute(
                "INSERT OR IGNORE INTO loop_media (digest, content, created_at) VALUES (?, ?, ?)",
                (digest, content, time.time()),
            )

    @router.get("/loop/media/{digest}")
    def get_media(digest: Digest, conn: connection) -> Response:
        ensure_tables(conn)
        row = conn.execute("SELECT content FROM loop_media WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            raise HTTPException(404, "no such media")
        return Response(row["content"], media_type="image/gif")

    @router.get("/loop/tasks/{task_id}/media")
    def get_task_media(task_id: Annotated[int, Path(ge=1, le=2**63 - 1)], conn: connection) -> dict[str, Any]:
        return {"media": task_media(conn, task_id)}

    return router


def _round_routes(connection: Any, admin: Any) -> APIRouter:
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
    def get_round(
        run: RunName, round_number: RoundNumber, me: admin, conn: connection, keep_ties: bool = False
    ) -> dict[str, Any]:
        ensure_tables(conn)
        found = round_rows(conn, run, round_number)
        if not found:
            raise HTTPException(404, f"loop {run} has no round {round_number} on this server")
        return {**found[0], "comparisons": round_comparisons(conn, run, round_number, keep_ties)}

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
