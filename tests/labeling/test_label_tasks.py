"""Candidates files -> tasks: validation names file:line, reloading adds nothing."""

from __future__ import annotations

import json

import pytest
from label_helpers import write_jsonl

from rlhfkit.errors import UserError
from rlhfkit.labeling.db import open_db
from rlhfkit.labeling.tasks import add_tasks, read_candidates

GOOD = {"prompt": "p", "responses": ["a", "b"]}


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"responses": ["a", "b"]}), "needs a 'prompt' string or a 'messages' list"),
        (json.dumps({"prompt": "p", "responses": ["only one"]}), "has 1 response(s); expected 2 to 9"),
        (json.dumps({"prompt": "p", "responses": [f"r{i}" for i in range(10)]}), "has 10 response(s); expected 2 to 9"),
        (json.dumps({"prompt": "p", "responses": ["a", 7]}), "responses[1] must be a non-empty string"),
        (json.dumps({"prompt": "p", "responses": "a, b"}), "'responses' must be a list of strings"),
        (json.dumps(["a", "b"]), "expected a JSON object, got list"),
    ],
)
def test_a_bad_record_is_refused_naming_file_and_line(tmp_path, bad_line, expected):
    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + bad_line + "\n")  # a blank line 2: numbering counts it
    with pytest.raises(UserError) as error:
        read_candidates(path)
    assert str(error.value).startswith(f"{path}:3: ")
    assert expected in str(error.value)


def test_a_missing_file_and_an_empty_file_are_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_candidates(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="empty.jsonl: holds no candidates"):
        read_candidates(tmp_path / "empty.jsonl")


def test_records_with_repeated_responses_are_left_out_with_a_warning(tmp_path, capsys):
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, {"prompt": "q", "responses": ["same", "same"]}])
    candidates = read_candidates(path)
    assert [c.record for c in candidates] == [GOOD]
    assert "left out 1 record(s) whose responses repeat the same text (lines 2)" in capsys.readouterr().err


def test_records_are_kept_as_given_with_their_source_line(tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}], "responses": ["a", "b", "c"], "id": "x"}
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, chat])
    candidates = read_candidates(path)
    assert [(c.record, c.source) for c in candidates] == [(GOOD, f"{path}:1"), (chat, f"{path}:2")]


def test_loading_the_same_file_again_adds_no_task(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [GOOD, {"prompt": "q", "responses": ["c", "d"]}])
    # the same record with its keys in another order is the same task
    overlapping = write_jsonl(
        tmp_path / "b.jsonl", [{"responses": ["a", "b"], "prompt": "p"}, {"prompt": "r", "responses": ["e", "f"]}]
    )
    conn = open_db(tmp_path / "labels.sqlite")
    try:
        assert add_tasks(conn, read_candidates(first)) == 2
        assert add_tasks(conn, read_candidates(first)) == 0
        assert add_tasks(conn, read_candidates(overlapping)) == 1
        rows = conn.execute("SELECT record, source FROM tasks ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [(json.loads(r[0]), r[1]) for r in rows] == [
        (GOOD, f"{first}:1"),
        ({"prompt": "q", "responses": ["c", "d"]}, f"{first}:2"),
        ({"prompt": "r", "responses": ["e", "f"]}, f"{overlapping}:2"),
    ]


def test_a_foreign_sqlite_file_is_not_taken_for_a_labelling_database(tmp_path):
    import sqlite3

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="not an rlhfkit labelling database"):
        open_db(other)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a usable SQLite database"):
        open_db(tmp_path / "junk.sqlite")
