"""Candidates files -> labelling tasks.

A task is one candidates record (a prompt and 2..9 responses), stored as
given. Its identity is the hash of its canonical JSON, so loading the same
file twice (or two files that overlap) adds each record once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.data.records import VALIDATORS, read_rows
from rlhfkit.errors import UserError
from rlhfkit.labeling.db import immediate

# Keys 1-9 pick responses on the page, so a task shows at most nine.
MAX_RESPONSES = 9


@dataclass(frozen=True)
class Candidate:
    record: dict[str, Any]
    source: str  # "file:line"

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self.record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_candidates(path: Path) -> list[Candidate]:
    """Validated candidates from a file; a record whose responses repeat a text is left out with a warning."""
    name, rows = read_rows(path)
    if not rows:
        raise UserError(f'{name}: holds no candidates (expected {{"prompt": ..., "responses": [...]}} records)')
    candidates, repeated = [], []
    for number, record in rows:
        where = f"{name}:{number}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
        VALIDATORS["candidates"](record, where)
        responses = record["responses"]
        if not 2 <= len(responses) <= MAX_RESPONSES:
            raise UserError(
                f"{where}: field 'responses' has {len(responses)} response(s); expected 2 to {MAX_RESPONSES}"
            )
        if len(set(responses)) < len(responses):
            repeated.append(str(number))
            continue
        candidates.append(Candidate(record=record, source=where))
    if repeated:
        shown = ", ".join(repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        print(
            f"warning: {name}: left out {len(repeated)} record(s) whose responses repeat the same text (lines {shown})",
            file=sys.stderr,
        )
    return candidates


def add_tasks(conn: sqlite3.Connection, candidates: list[Candidate]) -> int:
    """Insert the candidates not already present; returns how many were new."""
    now = time.time()
    with immediate(conn):
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO tasks (content_hash, record, n_responses, source, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (c.content_hash, json.dumps(c.record, ensure_ascii=False), len(c.record["responses"]), c.source, now)
                for c in candidates
            ],
        )
        return conn.total_changes - before
