"""Many labellers at once lose nothing and never share a task; a killed server keeps every judgement."""

from __future__ import annotations

import io
import json
import signal
import threading
from contextlib import redirect_stdout

import httpx
from label_helpers import LiveServer, free_port, make_db, pair_tasks, start_server

from rlhfkit.cli import main
from rlhfkit.labeling.app import ServeSettings

LABELLERS = 20
TASKS = 60


def _label_until_done(url: str, token: str, start: threading.Barrier, results: list, failures: list) -> None:
    """One labeller: take a task, answer it, until 204 (bounded: never more rounds than tasks)."""
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            start.wait(timeout=60)
            for _ in range(TASKS + 1):
                response = client.get("/api/tasks/next")
                if response.status_code == 204:
                    return
                task_id = response.json()["task_id"]
                posted = client.post("/api/judgements", json={"task_id": task_id, "choice": "A"})
                if posted.status_code != 201:
                    failures.append((task_id, posted.status_code, posted.text))
                    return
                results.append((task_id, posted.json()["id"]))
            failures.append("more rounds than tasks")
    except Exception as error:  # reported by the test, with the labeller's failure
        failures.append(repr(error))


def test_twenty_labellers_at_once_never_share_a_task_and_lose_no_judgement(tmp_path):
    names = [f"labeller{i:02d}" for i in range(LABELLERS)]
    db = make_db(tmp_path, pair_tasks(TASKS), {name: False for name in names})
    results: dict[str, list] = {name: [] for name in names}
    failures: list = []
    start = threading.Barrier(LABELLERS)
    with LiveServer(db.path, ServeSettings(judgements_per_task=1)) as server:
        threads = [
            threading.Thread(
                target=_label_until_done, args=(server.url, db.tokens[name], start, results[name], failures)
            )
            for name in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    handed_out = [task_id for name in names for task_id, _ in results[name]]
    assert sorted(handed_out) == list(range(1, TASKS + 1))  # each task to exactly one labeller
    stored = db.query(
        "SELECT j.id, j.task_id, l.name FROM judgements j JOIN labelers l ON l.id = j.labeler_id ORDER BY j.id"
    )
    acknowledged = sorted((judgement_id, task_id, name) for name in names for task_id, judgement_id in results[name])
    assert stored == acknowledged  # every 201 is in the database, and nothing else is
    assert sum(1 for name in names if results[name]) > 1  # the work really was shared


def test_a_server_killed_mid_session_keeps_every_saved_judgement(tmp_path):
    db = make_db(tmp_path, pair_tasks(6), {"boss": True, "ann": False, "bob": False})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(db, port)
    try:
        with httpx.Client(base_url=url, headers=db.headers("ann")) as ann:
            for choice in ("A", "B", "tie"):
                task = ann.get("/api/tasks/next").json()
                assert (
                    ann.post("/api/judgements", json={"task_id": task["task_id"], "choice": choice}).status_code == 201
                )
        with httpx.Client(base_url=url, headers=db.headers("bob")) as bob:
            held = bob.get("/api/tasks/next").json()  # shown, not yet answered
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)

        server = start_server(db, port)  # the same tasks file again: no new tasks
        with httpx.Client(base_url=url, headers=db.headers("boss")) as boss:
            progress = boss.get("/api/admin/progress").json()
        assert (progress["tasks"], progress["judgements"], progress["in_progress"]) == (6, 3, 1)
        with httpx.Client(base_url=url, headers=db.headers("bob")) as bob:
            assert bob.get("/api/tasks/next").json() == held  # same task, same order, after the restart
            assert bob.post("/api/judgements", json={"task_id": held["task_id"], "choice": "A"}).status_code == 201
        with httpx.Client(base_url=url, headers=db.headers("ann")) as ann:
            assert ann.get("/api/tasks/next").json()["task_id"] == 5  # 1-3 hers, 4 answered by bob
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    out = tmp_path / "comparisons.jsonl"
    with redirect_stdout(io.StringIO()):
        assert main(["label", "export", "--db", str(db.path), "--out", str(out), "--keep-ties"]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["meta"]["task_id"], r["meta"]["labeler"], r["meta"]["choice"]) for r in exported] == [
        (1, "ann", "A"),
        (2, "ann", "B"),
        (3, "ann", "tie"),
        (4, "bob", "A"),
    ]
