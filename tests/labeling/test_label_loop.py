"""`rlhfkit loop --server`: the loop waits for people on the labelling page, stops at its timeout, continues."""

from __future__ import annotations

import contextlib
import io
import json

import httpx
from label_helpers import LiveServer, make_db, pair_tasks

from rlhfkit.cli import main

QUICK = [
    "model.dtype=float32", "loop.rounds=1", "loop.labels_per_round=3", "loop.candidates_per_round=6",
    "loop.ppo_iterations=1", "train.batch_size=4", "train.ppo_epochs=1", "model.lora.top_layers=1", "rm.train.steps=2",
    "rm.train.batch_size=2", "rm.ensemble_size=2", "data.num_eval_prompts=6", "generation.max_new_tokens=6",
    "loop.poll_seconds=0.1",
]  # fmt: skip


def judge_everything(url: str, headers: dict[str, str], choice: str) -> int:
    """Answer every task the server hands this labeller with `choice`; returns how many."""
    count = 0
    with httpx.Client(base_url=url, headers=headers) as client:
        while (task := client.get("/api/tasks/next")).status_code == 200:
            posted = client.post("/api/judgements", json={"task_id": task.json()["task_id"], "choice": choice})
            assert posted.status_code == 201
            count += 1
    return count


def test_loop_waits_for_people_stops_at_the_timeout_and_continues_with_their_labels(tmp_path, tiny_model_dir):
    db = make_db(tmp_path, pair_tasks(1), {"boss": True, "ann": False})
    out = tmp_path / "loop"
    with LiveServer(db.path) as server:
        command = ["loop", "--server", server.url, "--token", db.tokens["boss"], "--out", str(out)]
        settings = ["--set", f"model.name={tiny_model_dir}", *QUICK]
        # not capsys: uvicorn's logging set-up in LiveServer closes handlers that still write to an earlier stream
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            assert main([*command, *settings, "loop.label_timeout=0.3"]) == 2
        error = stderr.getvalue().strip().splitlines()[-1]  # after the progress bars: one line
        assert (
            error.startswith("rlhfkit loop: error: round 1: 0 of 3 judgements arrived")
            and "rerun the same command" in error
        )
        assert judge_everything(server.url, db.headers("ann"), "A") == 4  # the round's 3 pairs and the unrelated task
        assert main([*command, *settings]) == 0
        [row] = httpx.get(server.url + "/api/admin/loop", headers=db.headers("boss")).json()["rounds"]
    summary = json.loads((out / "summary.json").read_text())
    [result] = summary["rounds"]
    assert result["labels"] == 3 and summary["labels_source"] == "server"
    labels = [json.loads(line) for line in (out / "round-1" / "labels.jsonl").read_text().splitlines()]
    assert all(label["meta"]["labeler"] == "ann" for label in labels)
    assert (row["judged"], row["waiting"]) == (3, 0)
    assert row["summary"]["reward_model_accuracy"] == result["reward_model_accuracy"]
