"""The JSON API on a live server: the labelling flow, status codes, admin views and export."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import httpx
import pytest
from label_helpers import LiveServer, make_db, pair_tasks

from rlhfkit.cli import main
from rlhfkit.labeling.app import ServeSettings

THREE = {"prompt": "rank us", "responses": ["r0", "r1", "r2"]}


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path, pair_tasks(2) + [THREE], {"boss": True, "ann": False, "bob": False})


def test_a_labeller_works_through_the_queue_until_204(db):
    with LiveServer(db.path) as server, httpx.Client(base_url=server.url, headers=db.headers("ann")) as ann:
        assert ann.get("/api/me").json() | {"csrf_token": None} == {
            "name": "ann",
            "admin": False,
            "csrf_token": None,
            "judged": 0,
            "skipped": 0,
            "remaining": 3,
        }
        first = ann.get("/api/tasks/next")
        assert first.status_code == 200
        task = first.json()
        assert task["task_id"] == 1 and task["prompt"] == "prompt 0"
        assert sorted(task["responses"]) == ["first answer to 0", "second answer to 0"]
        posted = ann.post("/api/judgements", json={"task_id": 1, "choice": "A", "comment": "clearer"})
        assert posted.status_code == 201 and posted.json() == {"id": 1}
        assert ann.post("/api/judgements", json={"task_id": 1, "choice": "B"}).status_code == 409

        assert ann.get("/api/tasks/next").json()["task_id"] == 2
        assert ann.post("/api/judgements", json={"task_id": 2, "choice": "skip"}).status_code == 201
        third = ann.get("/api/tasks/next").json()
        assert third["task_id"] == 3 and sorted(third["responses"]) == ["r0", "r1", "r2"]
        assert ann.post("/api/judgements", json={"task_id": 3, "ranking": [2, 0, 1]}).status_code == 201

        done = ann.get("/api/tasks/next")
        assert (done.status_code, done.content) == (204, b"")
        me = ann.get("/api/me").json()
        assert (me["judged"], me["skipped"], me["remaining"]) == (2, 1, 0)
    # what ann was shown decides what was stored
    shown = {row[0]: json.loads(row[1]) for row in db.query("SELECT task_id, display_order FROM assignments")}
    stored = db.query("SELECT task_id, choice, ranking, comment FROM judgements ORDER BY id")
    assert stored == [
        (1, "A", json.dumps([shown[1][0], shown[1][1]]), "clearer"),
        (2, "skip", None, ""),
        (3, "ranking", json.dumps([shown[3][2], shown[3][0], shown[3][1]]), ""),
    ]


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"task_id": 1, "choice": "C"}, 422, "must be one of A, B, tie, both_bad, skip"),
        ({"task_id": 1, "ranking": [0, 0]}, 422, "each display position 0..1 once"),
        ({"task_id": 1, "choice": "A", "extra": 1}, 422, None),
        ({"task_id": 1, "choice": "A", "comment": "x" * 5001}, 422, None),
        ({"choice": "A"}, 422, None),
        ({"task_id": 2, "choice": "A"}, 409, "was not shown to you"),
        ({"task_id": 42, "choice": "A"}, 404, "no task 42"),
    ],
)
def test_bad_judgements_are_refused_and_store_nothing(db, body, status, detail):
    with LiveServer(db.path) as server, httpx.Client(base_url=server.url, headers=db.headers("ann")) as ann:
        ann.get("/api/tasks/next")
        response = ann.post("/api/judgements", json=body)
    assert response.status_code == status
    if detail is not None:
        assert detail in response.json()["detail"]
    assert db.query("SELECT count(*) FROM judgements") == [(0,)]


def test_admin_progress_agreement_and_export(db, tmp_path):
    with LiveServer(db.path, ServeSettings(judgements_per_task=2)) as server:
        for name, choice in (("ann", "A"), ("bob", "A"), ("boss", "tie")):
            with httpx.Client(base_url=server.url, headers=db.headers(name)) as client:
                task = client.get("/api/tasks/next").json()
                client.post("/api/judgements", json={"task_id": task["task_id"], "choice": choice}).raise_for_status()
        with httpx.Client(base_url=server.url, headers=db.headers("boss")) as boss:
            progress = boss.get("/api/admin/progress").json()
            agreement = boss.get("/api/admin/agreement").json()
            exported = boss.get("/api/admin/export/comparisons.jsonl")
            kept = boss.get("/api/admin/export/comparisons.jsonl", params={"keep_ties": "true"})
            rankings = boss.get("/api/admin/export/rankings.jsonl")
            unknown = boss.get("/api/admin/export/secrets.txt")
    for labeler in progress["labelers"]:
        assert isinstance(labeler.pop("last_judged_at"), float)
    # ann and bob took task 1 (two per task); boss got task 2
    assert progress == {
        "tasks": 3,
        "complete": 1,
        "judgements_per_task": 2,
        "judgements": 3,
        "skips": 0,
        "in_progress": 0,
        "labelers": [
            {"name": "ann", "admin": False, "judged": 1, "skipped": 0, "ties": 0, "both_bad": 0},
            {"name": "bob", "admin": False, "judged": 1, "skipped": 0, "ties": 0, "both_bad": 0},
            {"name": "boss", "admin": True, "judged": 1, "skipped": 0, "ties": 1, "both_bad": 0},
        ],
    }
    shown = dict(db.query("SELECT labeler_id, display_order FROM assignments WHERE task_id = 1"))
    same = (
        json.loads(shown[2])[0] == json.loads(shown[3])[0]
    )  # ann (id 2) and bob (id 3) both chose "A" as shown to them
    assert (agreement["tasks"], agreement["compared"], agreement["agreed"]) == (1, 1, int(same))
    assert exported.headers["content-type"] == "application/x-ndjson"
    assert exported.headers["content-disposition"] == 'attachment; filename="comparisons.jsonl"'
    assert [r["meta"]["labeler"] for r in map(json.loads, exported.text.splitlines())] == ["ann", "bob"]
    assert [r["meta"]["choice"] for r in map(json.loads, kept.text.splitlines())] == ["A", "A", "tie"]
    assert (rankings.status_code, rankings.text) == (200, "")
    assert unknown.status_code == 404
    # the page's download is the CLI's file, byte for byte
    out = tmp_path / "cli.jsonl"
    with redirect_stdout(io.StringIO()):
        assert main(["label", "export", "--db", str(db.path), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == exported.text


def test_static_files_only_js_and_css(db):
    with LiveServer(db.path) as server, httpx.Client(base_url=server.url) as client:
        script, style = client.get("/static/label.js"), client.get("/static/style.css")
        assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert style.status_code == 200 and style.headers["content-type"] == "text/css; charset=utf-8"
        assert "textContent" in script.text and "innerHTML" not in script.text
        for hidden in ("/static/label.html", "/static/../db.py", "/static/nope.js", "/docs", "/openapi.json"):
            assert client.get(hidden).status_code == 404, hidden
