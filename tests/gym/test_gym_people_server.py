"""`rlhfkit gym` with people as the labeller: the server's media routes, the round, the timeout and --resume."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

import httpx
import numpy as np
import pytest
from label_helpers import LiveServer, free_port, make_db, pair_tasks

from rlhfkit.checkpoint import load_checkpoint
from rlhfkit.cli import main
from rlhfkit.gym.evaluate import write_gif

TINY = [
    "reward.kind=preferences", "reward.labeller=server", "env.num_envs=2", "ppo.rollout_steps=32",
    "train.mini_batch_size=16", "train.total_timesteps=128", "reward.comparisons=4", "reward.initial_fraction=1.0",
    "reward.segment_steps=8", "reward.train_steps=5", "reward.batch_size=4", "eval.episodes=1",
    "reward.poll_seconds=0.1",
]  # fmt: skip


def a_gif(tmp_path, shade):
    frames = [np.full((4, 6, 3), shade, np.uint8), np.full((4, 6, 3), 255 - shade, np.uint8)]
    return write_gif(frames, tmp_path / f"{shade}.gif", fps=10).read_bytes()


def test_the_server_keeps_animations_and_names_them_per_response_and_gives_ties_back(tmp_path):
    db = make_db(tmp_path, pair_tasks(1), {"boss": True, "ann": False})
    gifs = [a_gif(tmp_path, 0), a_gif(tmp_path, 90)]
    digests = [hashlib.sha256(gif).hexdigest() for gif in gifs]
    record = {"prompt": "Which clip?", "responses": ["clip one", "clip two"], "media": digests, "pair": 0}
    with (
        LiveServer(db.path) as server,
        httpx.Client(base_url=server.url, headers=db.headers("boss")) as boss,
        httpx.Client(base_url=server.url, headers=db.headers("ann")) as ann,
    ):
        media_path = f"/api/admin/loop/media/{digests[0]}"
        assert ann.put(media_path, content=gifs[0]).status_code == 403  # admins only
        assert boss.put(media_path, content=gifs[1]).status_code == 422  # not the bytes the digest names
        text = b"GIF? no"
        assert boss.put(f"/api/admin/loop/media/{hashlib.sha256(text).hexdigest()}", content=text).status_code == 415
        assert boss.put(media_path, content=gifs[0]).status_code == 204
        missing = boss.put("/api/admin/loop/run-1/rounds/1", json={"needed": 1, "records": [record]})
        assert missing.status_code == 422 and f"media {digests[1]} is not on the server" in missing.text
        assert boss.put(f"/api/admin/loop/media/{digests[1]}", content=gifs[1]).status_code == 204
        assert boss.put("/api/admin/loop/run-1/rounds/1", json={"needed": 1, "records": [record]}).status_code == 200

        for choice in ("A", "tie"):  # the text task first, then the round's pair
            task = ann.get("/api/tasks/next").json()
            media = ann.get(f"/api/loop/tasks/{task['task_id']}/media").json()["media"]
            assert ann.post("/api/judgements", json={"task_id": task["task_id"], "choice": choice}).status_code == 201
        assert media == {text: f"/api/loop/media/{digest}" for text, digest in zip(record["responses"], digests)}
        shown = ann.get(media["clip two"])
        assert shown.content == gifs[1] and shown.headers["content-type"] == "image/gif"
        assert ann.get("/api/loop/tasks/1/media").json() == {"media": {}}  # a text task
        assert ann.get(f"/api/loop/media/{'0' * 64}").status_code == 404

        assert boss.get("/api/admin/loop/run-1/rounds/1").json()["comparisons"] == []  # a tie, left out as in export
        [tie] = boss.get("/api/admin/loop/run-1/rounds/1?keep_ties=true").json()["comparisons"]
        assert (tie["chosen"], tie["rejected"], tie["label"]) == ("clip one", "clip two", 0.5)
        assert tie["meta"]["extra"]["pair"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["reward.labeller=people"], "reward.labeller 'people' is not one of synthetic, server"),
        (["reward.labeller=server"], "reward.labeller=server needs the labelling server's URL"),
        (["reward.labeller=server", "reward.server=http://x", "reward.temperature=1"], "reward.temperature is the"),
        (["reward.labeller=server", "reward.server=http://x", "reward.label_timeout=0"], "reward.label_timeout"),
    ],
)
def test_bad_people_settings_exit_2_with_one_line_and_write_nothing(settings, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["gym", "--out", str(out), "--set", "reward.kind=preferences", *settings]) == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert message in error
    assert not out.exists()


def judge_everything(url, headers, db):
    """Answer every task: the clip whose caption sorts first wins, but pair 1 is a tie.

    Returns P(first segment preferred) of each of the round's judgements, in order, from the pushed records.
    """
    records = {task_id: json.loads(record) for task_id, record in db.query("SELECT id, record FROM tasks")}
    expected = []
    with httpx.Client(base_url=url, headers=headers) as client:
        while (response := client.get("/api/tasks/next")).status_code == 200:
            task = response.json()
            record, winner = records[task["task_id"]], min(task["responses"])
            tie = record.get("pair") == 1
            choice = "tie" if tie else "AB"[task["responses"].index(winner)]  # in the order shown
            assert (
                client.post("/api/judgements", json={"task_id": task["task_id"], "choice": choice}).status_code == 201
            )
            if "pair" in record:
                expected.append(0.5 if tie else float(winner == record["responses"][0]))
    return expected


def test_a_gym_run_waits_for_people_stops_at_the_timeout_and_resumes_with_their_labels(tmp_path):
    db = make_db(tmp_path, pair_tasks(1), {"boss": True, "ann": False})
    out = tmp_path / "run"
    closed = f"http://127.0.0.1:{free_port()}"
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert main(["gym", "--out", str(out), "--token", "t", "--set", *TINY, f"reward.server={closed}"]) == 2
    [error] = stderr.getvalue().strip().splitlines()
    assert f"cannot reach the labelling server at {closed}" in error
    assert not out.exists()  # refused before anything was written

    with LiveServer(db.path) as server:
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            not_admin = ["gym", "--out", str(out), "--token", db.tokens["ann"], "--set", *TINY]
            assert main([*not_admin, f"reward.server={server.url}"]) == 2
        assert "--token must be an admin's" in stderr.getvalue() and not out.exists()
        command = ["gym", "--out", str(out), "--token", db.tokens["boss"]]
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            assert main([*command, "--set", *TINY, f"reward.server={server.url}", "reward.label_timeout=0.3"]) == 2
        error = stderr.getvalue().strip().splitlines()[-1]
        assert error.startswith("rlhfkit gym: error: round 1: 0 of 4 judgements arrived") and "--resume" in error
        assert (out / "checkpoints/step-0").is_dir()  # where update 1 started: --resume replays it

        expected = judge_everything(server.url, db.headers("ann"), db)
        assert main([*command, "--resume", "--set", "reward.label_timeout=60"]) == 0
        [round_row] = httpx.get(server.url + "/api/admin/loop", headers=db.headers("boss")).json()["rounds"]
    assert (round_row["round"], round_row["tasks"], round_row["judged"]) == (1, 4, 4)  # the same round, re-polled
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparisons"] == 4 and summary["updates"] == 2
    tensors, _ = load_checkpoint(out / "checkpoints/step-2")
    assert tensors["comparisons"]["prob_first"].tolist() == expected and len(expected) == 4
