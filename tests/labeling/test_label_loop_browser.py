"""In headless Chromium: a labeller labels a loop round's pairs on the page, the loop takes them and goes on,
and the admin page shows the round's judgements and figures."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from label_helpers import LiveServer, make_db
from playwright.sync_api import expect
from test_label_browser import answer_and_wait, shown_task, sign_in

from rlhfkit.cli import main

pytestmark = pytest.mark.browser

QUICK = [
    "model.dtype=float32", "loop.rounds=1", "loop.labels_per_round=2", "loop.candidates_per_round=4",
    "loop.ppo_iterations=1", "train.batch_size=4", "train.ppo_epochs=1", "model.lora.top_layers=1", "rm.train.steps=2",
    "rm.train.batch_size=2", "rm.ensemble_size=2", "data.num_eval_prompts=6", "generation.max_new_tokens=6",
    "loop.poll_seconds=0.2", "loop.label_timeout=600",
]  # fmt: skip


def pushed_round(url: str, headers: dict[str, str]) -> dict:
    """The loop's round once its pairs are tasks on the server (the loop samples them first)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rounds = httpx.get(url + "/api/admin/loop", headers=headers).json()["rounds"]
        if rounds:
            return rounds[0]
        time.sleep(0.2)
    raise AssertionError("the loop pushed no round")


def test_a_labeller_labels_a_loop_round_on_the_page_and_the_loop_goes_on(tmp_path, chromium, tiny_model_dir):
    db = make_db(tmp_path, [], {"boss": True, "ann": False})
    db_path, tokens = db.path, db.tokens
    out, codes = tmp_path / "loop", []
    with LiveServer(db_path) as server:
        command = ["loop", "--server", server.url, "--token", tokens["boss"], "--out", str(out)]
        loop = threading.Thread(
            target=lambda: codes.append(main([*command, "--set", f"model.name={tiny_model_dir}", *QUICK]))
        )
        loop.start()
        boss_headers = {"Authorization": f"Bearer {tokens['boss']}"}
        assert pushed_round(server.url, boss_headers)["tasks"] == 2

        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, server.url, tokens["ann"])
        for task_id in (1, 2):  # the round's two pairs, the first pushed first
            shown_task(page, task_id)
            answer_and_wait(page, task_id, lambda: page.keyboard.press("ArrowLeft"))
        expect(page.locator("#done")).to_be_visible()
        loop.join()
        assert codes == [0]

        context.close()
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        admin = context.new_page()
        admin.set_default_timeout(20_000)
        sign_in(admin, server.url, tokens["boss"])
        admin.click("#admin-link")
        expect(admin.locator("#loop-rounds tbody tr")).to_have_count(1)
        cells = admin.locator("#loop-rounds tbody tr td").all_text_contents()
        assert cells[1:4] == ["1", "2 of 2", "0"] and cells[4].endswith("%")
        expect(admin.locator("#loop-waiting")).to_have_text("No round is waiting for judgements.")
        context.close()
    [result] = json.loads((out / "summary.json").read_text())["rounds"]
    assert result["labels"] == 2
    assert f"{result['gold_score']:.3f}" == cells[5]
