"""Handing out tasks under leases, and taking judgements back (straight on the database, no server)."""

from __future__ import annotations

import json
import random

import pytest
from label_helpers import make_db, pair_tasks

from rlhfkit.labeling.db import connect
from rlhfkit.labeling.decisions import InvalidJudgement
from rlhfkit.labeling.queue import AlreadyJudged, NotShown, TaskNotFound, next_task, record_judgement

LONG = 600.0


@pytest.fixture
def labels(tmp_path):
    db = make_db(tmp_path, pair_tasks(3), {"ann": False, "bob": False, "cat": False})
    conn = connect(db.path)
    ids = {name: conn.execute("SELECT id FROM labelers WHERE name = ?", (name,)).fetchone()[0] for name in db.tokens}
    yield conn, ids
    conn.close()


def test_one_judgement_per_task_gives_each_labeller_a_different_task(labels):
    conn, ids = labels
    rng = random.Random(0)
    got = [next_task(conn, ids[name], 1, LONG, rng) for name in ("ann", "bob", "cat")]
    assert [task.task_id for task in got] == [1, 2, 3]
    assert next_task(conn, ids["ann"], 1, LONG, rng).task_id == 1  # asking again: the same task, not a fourth


def test_asking_again_returns_the_same_task_in_the_same_order(labels):
    conn, ids = labels
    first = next_task(conn, ids["ann"], 1, LONG, random.Random(1))
    again = next_task(conn, ids["ann"], 1, LONG, random.Random(2))
    assert again == first
    order = json.loads(conn.execute("SELECT display_order FROM assignments WHERE task_id = 1").fetchone()[0])
    responses = ["first answer to 0", "second answer to 0"]
    assert first.responses == [responses[i] for i in order]


def test_the_order_shown_is_shuffled_per_assignment(tmp_path):
    db = make_db(tmp_path, pair_tasks(40), {"ann": False})
    conn = connect(db.path)
    rng = random.Random(7)
    shown = []
    for _ in range(40):
        task = next_task(conn, 1, 1, LONG, rng)
        shown.append(task.responses[0].startswith("first"))
        record_judgement(conn, 1, task.task_id, "skip", None, "")
    conn.close()
    assert 5 < sum(shown) < 35  # both orders occur; P(fail) < 1e-5 for a fair shuffle


def test_two_judgements_per_task_give_the_same_task_to_two_labellers_only(labels):
    conn, ids = labels
    rng = random.Random(0)
    assert [next_task(conn, ids[name], 2, LONG, rng).task_id for name in ("ann", "bob", "cat")] == [1, 1, 2]


def test_an_expired_lease_frees_the_task_and_a_late_answer_is_still_kept(labels):
    conn, ids = labels
    rng = random.Random(0)
    assert next_task(conn, ids["ann"], 1, -1.0, rng).task_id == 1  # lease already over
    assert next_task(conn, ids["bob"], 1, LONG, rng).task_id == 1
    record_judgement(conn, ids["bob"], 1, "A", None, "")
    record_judgement(conn, ids["ann"], 1, "B", None, "late")
    rows = conn.execute("SELECT labeler_id, choice, comment FROM judgements ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(ids["bob"], "A", ""), (ids["ann"], "B", "late")]


def test_skip_hides_the_task_from_this_labeller_only(labels):
    conn, ids = labels
    rng = random.Random(0)
    assert next_task(conn, ids["ann"], 1, LONG, rng).task_id == 1
    record_judgement(conn, ids["ann"], 1, "skip", None, "")
    assert next_task(conn, ids["ann"], 1, LONG, rng).task_id == 2
    assert next_task(conn, ids["bob"], 1, LONG, rng).task_id == 1


def test_nothing_left_is_none(labels):
    conn, ids = labels
    rng = random.Random(0)
    for _ in range(3):
        task = next_task(conn, ids["ann"], 1, LONG, rng)
        record_judgement(conn, ids["ann"], task.task_id, "tie", None, "")
    assert next_task(conn, ids["ann"], 1, LONG, rng) is None
    assert next_task(conn, ids["bob"], 1, LONG, rng) is None  # every task has its one judgement


def test_refused_answers_store_nothing(labels):
    conn, ids = labels
    rng = random.Random(0)
    next_task(conn, ids["ann"], 1, LONG, rng)
    with pytest.raises(TaskNotFound):
        record_judgement(conn, ids["ann"], 99, "A", None, "")
    with pytest.raises(NotShown):
        record_judgement(conn, ids["ann"], 2, "A", None, "")
    with pytest.raises(InvalidJudgement):
        record_judgement(conn, ids["ann"], 1, "C", None, "")
    assert conn.execute("SELECT count(*) FROM judgements").fetchone()[0] == 0
    record_judgement(conn, ids["ann"], 1, "A", None, "")
    with pytest.raises(AlreadyJudged):
        record_judgement(conn, ids["ann"], 1, "B", None, "")
    assert [tuple(r) for r in conn.execute("SELECT task_id, choice FROM judgements")] == [(1, "A")]
