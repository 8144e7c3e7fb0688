"""Shared by the labelling tests: sample data, a database set up through the real store, a live server."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from rlhfkit.labeling.app import ServeSettings, create_app
from rlhfkit.labeling.db import open_db
from rlhfkit.labeling.labelers import add_labeler
from rlhfkit.labeling.tasks import add_tasks, read_candidates


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def pair_tasks(n: int) -> list[dict[str, Any]]:
    """n two-response candidates with distinct texts."""
    return [{"prompt": f"prompt {i}", "responses": [f"first answer to {i}", f"second answer to {i}"]} for i in range(n)]


@dataclass
class LabelDB:
    path: Path
    tasks_file: Path
    tokens: dict[str, str]  # labeller name -> token

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return [tuple(row) for row in conn.execute(sql, params)]
        finally:
            conn.close()

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def make_db(folder: Path, records: list[dict[str, Any]], labelers: dict[str, bool]) -> LabelDB:
    """A database holding `records` as tasks (none: an empty queue, as a loop's server starts) and the labellers
    {name: is_admin}."""
    tasks_file = write_jsonl(folder / "candidates.jsonl", records)
    path = folder / "labels.sqlite"
    conn = open_db(path)
    try:
        if records:
            add_tasks(conn, read_candidates(tasks_file))
        tokens = {name: add_labeler(conn, name, admin) for name, admin in labelers.items()}
    finally:
        conn.close()
    return LabelDB(path=path, tasks_file=tasks_file, tokens=tokens)


class LiveServer:
    """The real app under uvicorn, in a thread, on a free loopback port."""

    def __init__(self, db_path: Path, settings: ServeSettings = ServeSettings()):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(db_path, settings), log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the labelling server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.listener.close()


def streamed_body(mebibytes: int) -> Iterator[bytes]:
    """A request body made as it is sent, so that a test posting 50 MB never holds 50 MB."""
    for _ in range(mebibytes):
        yield b"x" * (1024 * 1024)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(db: LabelDB, port: int, *options: str) -> subprocess.Popen:
    """`rlhfkit label serve` in its own process, as a person starts it (for kills, signals and memory).

    Its log goes to `serve.log` beside the database (appended over restarts): a pipe nobody reads
    could fill and stall it.
    """
    command = [sys.executable, "-m", "rlhfkit", "label", "serve", "--tasks", str(db.tasks_file), "--db", str(db.path)]
    log = (db.path.parent / "serve.log").open("ab")
    server = subprocess.Popen(
        [*command, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, (db.path.parent / "serve.log").read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not start within 60 s")
