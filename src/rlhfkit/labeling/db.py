"""The labelling database: one SQLite file in WAL mode holding tasks, labellers and judgements.

Every request opens its own short-lived connection; writers serialise on
`BEGIN IMMEDIATE`, so a read-then-write decision (which task to hand out)
cannot interleave with another writer's. `synchronous=FULL` makes a
committed judgement survive a crash of the process or the machine.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlhfkit.errors import UserError

# Marks the file as ours ("RLHF" in ASCII), so that pointing --db at another SQLite file fails clearly.
APPLICATION_ID = 0x524C4846
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

SCHEMA = (
    """
CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,     -- sha256 of the canonical JSON record: reloading adds nothing
    record       TEXT NOT NULL,            -- the candidates record as given (JSON)
    n_responses  INTEGER NOT NULL,
    source       TEXT NOT NULL,            -- file:line it was first loaded from
    created_at   REAL NOT NULL
)
    """,
    """
CREATE TABLE labelers (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,       -- sha256 of the token (never the token itself)
    is_admin   INTEGER NOT NULL,
    created_at REAL NOT NULL
)
    """,
    """
CREATE TABLE assignments (                 -- a task shown to a labeller, once, in a stored order
    task_id       INTEGER NOT NULL REFERENCES tasks(id),
    labeler_id    INTEGER NOT NULL REFERENCES labelers(id),
    display_order TEXT NOT NULL,           -- JSON list: display position -> response index
    shown_at      REAL NOT NULL,
    lease_expires REAL NOT NULL,
    PRIMARY KEY (task_id, labeler_id)
)
    """,
    """
CREATE TABLE judgements (
    id         INTEGER PRIMARY KEY,
    task_id    INTEGER NOT NULL REFERENCES tasks(id),
    labeler_id INTEGER NOT NULL REFERENCES labelers(id),
    choice     TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'both_bad', 'skip', 'ranking')),
    ranking    TEXT,                       -- JSON list of response indices, best first (A, B and ranking)
    comment    TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (task_id, labeler_id)
)
    """,
    """
CREATE INDEX judgements_by_labeler ON judgements (labeler_id)
    """,
    """
CREATE INDEX assignments_by_labeler ON assignments (labeler_id, lease_expires)
    """,
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit, see `immediate`)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


# Writers of this process queue here before they ask SQLite for its write lock. SQLite's own busy
# handler sleeps with growing pauses (up to 100 ms each) while another connection holds the lock:
# with 20 labellers' requests in the server's thread pool that, not the work, set the p99 latency.
# A thread waiting on this lock wakes the moment the writer before it commits.
_WRITE_LOCK = threading.Lock()


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the database's write lock up front (BEGIN IMMEDIATE)."""
    with _WRITE_LOCK:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def open_db(path: Path, create: bool = True) -> sqlite3.Connection:
    """Open (and with `create`, initialise) a labelling database; refuse files that are not one."""
    if not create and not path.is_file():
        raise UserError(f"{path}: no such database (create it with `rlhfkit label add-labeler NAME --db {path}`)")
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    try:
        conn = connect(path)
    except sqlite3.DatabaseError as error:
        raise _unusable(path, error) from None
    try:
        _initialise(conn, path)
    except BaseException as error:
        conn.close()
        if isinstance(error, sqlite3.DatabaseError):
            raise _unusable(path, error) from None
        raise
    return conn


def _unusable(path: Path, error: sqlite3.DatabaseError) -> UserError:
    return UserError(f"{path}: not a usable SQLite database ({error})")


def _initialise(conn: sqlite3.Connection, path: Path) -> None:
    with immediate(conn):
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if not has_tables:
            for statement in SCHEMA:  # one by one: executescript would COMMIT the open transaction first
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif application_id != APPLICATION_ID:
            raise UserError(f"{path}: an SQLite file, but not an rlhfkit labelling database")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{path}: labelling database schema version {version}; this rlhfkit reads version {SCHEMA_VERSION}"
            )
    conn.execute("PRAGMA journal_mode = WAL")
