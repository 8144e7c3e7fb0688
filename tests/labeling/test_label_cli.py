"""`rlhfkit label add-labeler | export | serve` through rlhfkit.cli.main."""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import socket

import httpx
import pytest
from label_helpers import free_port, make_db, pair_tasks, start_server, write_jsonl

from rlhfkit.cli import main
from rlhfkit.labeling.db import connect
from rlhfkit.labeling.queue import next_task, record_judgement


def test_add_labeler_prints_the_token_on_its_last_line_and_stores_only_its_hash(tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    assert main(["label", "add-labeler", "ann", "--db", str(db)]) == 0
    ann_token = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert main(["label", "add-labeler", "boss", "--db", str(db), "--admin"]) == 0
    boss_token = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", ann_token) and ann_token != boss_token
    conn = connect(db)
    rows = [tuple(r) for r in conn.execute("SELECT name, token_hash, is_admin FROM labelers ORDER BY id")]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert rows == [
        ("ann", hashlib.sha256(ann_token.encode()).hexdigest(), 0),
        ("boss", hashlib.sha256(boss_token.encode()).hexdigest(), 1),
    ]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database and any WAL beside it
    assert ann_token.encode() not in stored and boss_token.encode() not in stored


def test_add_labeler_refuses_a_taken_name(tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    assert main(["label", "add-labeler", "ann", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["label", "add-labeler", "ann", "--db", str(db), "--admin"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "rlhfkit label add-labeler: error: labeller name 'ann': already taken; choose another name\n"
    assert captured.out == ""


@pytest.mark.parametrize("name", ["", "   ", "bad\nname", "x" * 65])
def test_an_invalid_labeller_name_creates_no_database(tmp_path, capsys, name):
    db = tmp_path / "labels.sqlite"
    assert main(["label", "add-labeler", name, "--db", str(db)]) == 2
    assert "expected 1 to 64 printable characters" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "p", "responses": ["a", "b"', "malformed JSON"),
        ('{"responses": ["a", "b"]}', "needs a 'prompt' string or a 'messages' list"),
        ('{"prompt": "p", "responses": ["a"]}', "expected 2 to 9"),
        ('{"prompt": "p", "responses": ["a", ["b"]]}', "responses[1] must be a non-empty string"),
    ],
)
def test_serve_refuses_a_bad_tasks_file_naming_file_and_line_and_creates_nothing(tmp_path, capsys, line, message):
    tasks = tmp_path / "candidates.jsonl"
    tasks.write_text(
        '{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q", "responses": ["c", "d"]}\n' + line + "\n"
    )
    db = tmp_path / "labels.sqlite"
    assert main(["label", "serve", "--tasks", str(tasks), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfkit label serve: error: {tasks}:3: ") and message in err
    assert err.count("\n") == 1
    assert not db.exists()


def test_serve_refuses_bad_options_and_a_busy_port(tmp_path, capsys):
    db = make_db(tmp_path, pair_tasks(1), {"ann": False})
    assert main(["label", "serve", "--db", str(db.path), "--judgements-per-task", "0"]) == 2
    assert "--judgements-per-task must be at least 1, got 0" in capsys.readouterr().err
    absent = tmp_path / "absent.sqlite"
    assert main(["label", "serve", "--db", str(absent)]) == 2
    assert "absent.sqlite: no such database; create it with --tasks" in capsys.readouterr().err
    assert not absent.exists()
    empty = tmp_path / "empty.sqlite"
    assert main(["label", "add-labeler", "ann", "--db", str(empty)]) == 0
    capsys.readouterr()
    assert main(["label", "serve", "--db", str(empty)]) == 2
    assert "holds no tasks yet; load some with --tasks" in capsys.readouterr().err
    for option, value, message in (
        ("--rate-limit", "0", "--rate-limit must be positive, got 0.0"),
        ("--rate-limit", "nan", "--rate-limit must be positive, got nan"),
        ("--burst", "0", "--burst must be at least 1, got 0"),
    ):
        assert main(["label", "serve", "--db", str(db.path), option, value]) == 2
        assert message in capsys.readouterr().err
    new = tmp_path / "new.sqlite"
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["label", "serve", "--db", str(db.path), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        assert main(["label", "serve", "--tasks", str(db.tasks_file), "--db", str(new), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not new.exists()  # the port is checked before the database is created


def test_ctrl_c_on_serve_says_what_it_stopped_and_kept(tmp_path):
    db = make_db(tmp_path, pair_tasks(3), {"ann": False})
    _judge(db.path, [(1, "A", "")])  # from an earlier session
    port = free_port()
    server = start_server(db, port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=db.headers("ann")) as ann:
        task_id = ann.get("/api/tasks/next").json()["task_id"]
        assert ann.post("/api/judgements", json={"task_id": task_id, "choice": "B"}).status_code == 201
        ann.get("/api/tasks/next").raise_for_status()  # shown, left unanswered
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=60) == 130
    last = (tmp_path / "serve.log").read_text().splitlines()[-1]
    assert last == (
        "rlhfkit label serve: stopped after finishing the requests in flight (none pending); "
        f"2 judgement(s) and 0 skip(s) stored in {db.path} (1 this session); "
        "1 task(s) shown but unanswered stay reserved for their labellers"
    )


def _judge(db_path, answers):
    """(labeller id, choice or ranking, comment) answered in order through the store, with a fixed shuffle."""
    conn = connect(db_path)
    rng = random.Random(3)
    for labeler_id, answer, comment in answers:
        task = next_task(conn, labeler_id, 1, 600.0, rng)
        choice, ranking = (None, answer) if isinstance(answer, list) else (answer, None)
        record_judgement(conn, labeler_id, task.task_id, choice, ranking, comment)
    shown = {row[0]: json.loads(row[1]) for row in conn.execute("SELECT task_id, display_order FROM assignments")}
    conn.close()
    return shown


def _read(path):
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["meta"].pop("judged_at"))
    return records


def test_export_writes_comparisons_and_rankings_exactly(tmp_path, capsys):
    records = [
        {"prompt": "p1", "responses": ["a1", "b1"]},
        {"prompt": "p2", "responses": ["a2", "b2"], "model": "m"},
        {"messages": [{"role": "user", "content": "p3"}], "responses": ["a3", "b3", "c3"]},
        {"prompt": "p4", "responses": ["a4", "b4"]},
        {"prompt": "p5", "responses": ["a5", "b5"]},
    ]
    db = make_db(tmp_path, records, {"ann": False})
    shown = _judge(db.path, [(1, "B", "meh"), (1, "tie", ""), (1, [2, 0, 1], ""), (1, "both_bad", ""), (1, "skip", "")])
    out, rankings_out = tmp_path / "comparisons.jsonl", tmp_path / "rankings.jsonl"
    assert main(["label", "export", "--db", str(db.path), "--out", str(out), "--rankings-out", str(rankings_out)]) == 0
    assert capsys.readouterr().out == (
        f"wrote 1 comparison(s) to {out} and 1 ranking(s) to {rankings_out}; left out: 1 both_bad, 1 skip, 1 tie\n"
    )
    s1, s3 = shown[1], shown[3]
    assert _read(out) == [
        {
            "prompt": "p1",
            "chosen": records[0]["responses"][s1[1]],
            "rejected": records[0]["responses"][s1[0]],
            "meta": {"task_id": 1, "labeler": "ann", "choice": "B", "shown_order": s1, "comment": "meh"},
        },
    ]
    assert _read(rankings_out) == [
        {
            "messages": records[2]["messages"],
            "responses": [records[2]["responses"][s3[p]] for p in (2, 0, 1)],
            "meta": {"task_id": 3, "labeler": "ann", "choice": "ranking", "shown_order": s3, "comment": ""},
        },
    ]

    assert main(["label", "export", "--db", str(db.path), "--out", str(out), "--keep-ties", "--keep-both-bad"]) == 0
    captured = capsys.readouterr()
    assert (
        "warning: 1 ranking(s) of tasks with more than two responses not written; pass --rankings-out FILE"
        in captured.err
    )
    assert [(r["meta"]["task_id"], r.get("label"), r["chosen"], r["rejected"]) for r in _read(out)] == [
        (1, None, records[0]["responses"][s1[1]], records[0]["responses"][s1[0]]),
        (2, 0.5, "a2", "b2"),
        (4, 0.5, "a4", "b4"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_export_refuses_a_missing_database_or_folder_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "comparisons.jsonl"
    assert main(["label", "export", "--db", str(tmp_path / "absent.sqlite"), "--out", str(out)]) == 2
    assert "absent.sqlite: no such database" in capsys.readouterr().err
    assert not (tmp_path / "absent.sqlite").exists() and not out.exists()
    db = make_db(tmp_path, pair_tasks(1), {"ann": False})
    _judge(db.path, [(1, "A", "")])
    out.write_text("earlier export\n")
    missing = tmp_path / "no" / "rankings.jsonl"
    assert main(["label", "export", "--db", str(db.path), "--out", str(out), "--rankings-out", str(missing)]) == 2
    assert f"{missing}: folder {missing.parent} does not exist" in capsys.readouterr().err
    assert out.read_text() == "earlier export\n"  # nothing half done


def test_a_malformed_tasks_file_on_reload_leaves_the_database_as_it_was(tmp_path, capsys):
    db = make_db(tmp_path, pair_tasks(2), {"ann": False})
    good = write_jsonl(tmp_path / "more.jsonl", [{"prompt": "new", "responses": ["x", "y"]}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["label", "serve", "--tasks", str(good), "--tasks", str(bad), "--db", str(db.path)]) == 2
    assert f"{bad}:1: malformed JSON" in capsys.readouterr().err
    assert db.query("SELECT count(*) FROM tasks") == [(2,)]  # the good file was not half-loaded either
