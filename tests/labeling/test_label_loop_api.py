"""The online loop on the labelling server's admin API: push a round, count its judgements, keep its summary."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from label_helpers import LiveServer, free_port, make_db, pair_tasks

from rlhfkit.labeling.db import open_db
from rlhfkit.labeling.labelers import add_labeler

ROUND = "/api/admin/loop/run-1/rounds/1"
PAIR = {"prompt": "Say hi.", "responses": ["Hi!", "Go."]}


def test_admin_api_takes_a_round_counts_its_judgements_and_keeps_its_summary(tmp_path):
    db = make_db(tmp_path, pair_tasks(1), {"boss": True, "ann": False})
    records = [{"prompt": "Say hi.", "responses": ["Hi!", "Go."]}, {"prompt": "2+2?", "responses": ["4", "5"]}]
    with LiveServer(db.path) as server, httpx.Client(base_url=server.url, headers=db.headers("boss")) as boss:
        refused = httpx.put(server.url + ROUND, json={"needed": 2, "records": records}, headers=db.headers("ann"))
        assert refused.status_code == 403  # admins only
        pushed = boss.put(ROUND, json={"needed": 2, "records": records}).json()
        assert (pushed["added"], pushed["tasks"], pushed["judged"], pushed["waiting"]) == (2, 2, 0, 2)
        assert boss.put(ROUND, json={"needed": 2, "records": records}).json()["added"] == 0  # a rerun adds nothing
        bad = boss.put(ROUND, json={"needed": 1, "records": [{"prompt": "x", "responses": ["only one"]}]})
        assert bad.status_code == 422 and "record 1" in bad.text
        assert boss.get("/api/admin/loop/run-1/rounds/2").status_code == 404

        with httpx.Client(base_url=server.url, headers=db.headers("ann")) as ann:
            for choice in ("A", "tie", "B"):  # the unrelated task 1 first, then the round's two
                task = ann.get("/api/tasks/next").json()
                assert (
                    ann.post("/api/judgements", json={"task_id": task["task_id"], "choice": choice}).status_code == 201
                )
        status = boss.get(ROUND).json()
        assert (status["judged"], status["waiting"]) == (2, 0)  # the tie is an answer, though no comparison
        [comparison] = status["comparisons"]
        assert comparison["prompt"] == "2+2?" and comparison["meta"]["extra"]["loop"] == {"run": "run-1", "round": 1}
        assert {comparison["chosen"], comparison["rejected"]} == {"4", "5"}

        assert boss.put(ROUND + "/summary", json={"round": 1, "gold_score": 0.25}).status_code == 204
        [row] = boss.get("/api/admin/loop").json()["rounds"]
        assert (row["run"], row["round"], row["needed"], row["summary"]) == (
            "run-1",
            1,
            2,
            {"round": 1, "gold_score": 0.25},
        )


def test_serve_with_loop_starts_without_tasks_and_takes_a_loops_rounds(tmp_path):
    db = tmp_path / "labels.sqlite"
    conn = open_db(db)
    token = add_labeler(conn, "boss", True)
    conn.close()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit", "label", "serve", "--db", str(db), "--loop", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
        while server.poll() is None:
            try:
                rounds = httpx.get(url + "/api/admin/loop", headers=headers)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        assert rounds.json() == {"rounds": []}
        pushed = httpx.put(url + ROUND, json={"needed": 1, "records": [PAIR]}, headers=headers).json()
        assert (pushed["tasks"], pushed["waiting"]) == (1, 1)
    finally:
        server.terminate()
        server.wait()
        log.close()
