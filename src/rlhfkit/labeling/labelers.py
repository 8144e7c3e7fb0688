"""Labellers and their access tokens.

A token is 32 random bytes (URL-safe base64). Only its SHA-256 is stored:
the token has 256 bits of entropy, so a fast hash is enough (a slow password
hash protects guessable secrets, which these are not), and a lookup by hash
compares nothing secret in variable time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

from rlhfkit.errors import UserError
from rlhfkit.labeling.db import immediate

MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Labeler:
    id: int
    name: str
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token(token: str) -> str:
    """The value a cookie-signed-in page must echo in X-CSRF-Token: derived from the token, unguessable without it."""
    return hmac.new(token.encode("utf-8"), b"rlhfkit-label-csrf", hashlib.sha256).hexdigest()


def check_labeler_name(name: str) -> None:
    if not name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise UserError(f"labeller name {name!r}: expected 1 to {MAX_NAME_LENGTH} printable characters")


def add_labeler(conn: sqlite3.Connection, name: str, admin: bool) -> str:
    """Create a labeller; returns the token, which is shown once and never stored.

    Hex, not URL-safe base64: a base64 token begins with "-" one time in 64, and `--token -x...` then reads
    as an option on the command line (argparse refuses it)."""
    check_labeler_name(name)
    token = secrets.token_hex(32)
    with immediate(conn):
        if conn.execute("SELECT 1 FROM labelers WHERE name = ?", (name,)).fetchone():
            raise UserError(f"labeller name {name!r}: already taken; choose another name")
        conn.execute(
            "INSERT INTO labelers (name, token_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
            (name, hash_token(token), int(admin), time.time()),
        )
    return token


def find_labeler(conn: sqlite3.Connection, token: str) -> Labeler | None:
    row = conn.execute("SELECT id, name, is_admin FROM labelers WHERE token_hash = ?", (hash_token(token),)).fetchone()
    return None if row is None else Labeler(id=row["id"], name=row["name"], is_admin=bool(row["is_admin"]))


def count_labelers(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM labelers").fetchone()[0])
