"""In headless Chromium: a labeller compares a Gym run's segments, shown as two animations side by side, and the
run learns its reward from those judgements (`rlhfkit gym --set reward.kind=preferences reward.labeller=server`)."""

from __future__ import annotations

import json
import threading

import pytest
from label_helpers import LiveServer, make_db
from playwright.sync_api import expect
from test_label_browser import answer_and_wait, sign_in
from test_label_loop_browser import pushed_round

from rlhfkit.cli import main

pytestmark = pytest.mark.browser

TINY = [
    "reward.kind=preferences", "reward.labeller=server", "env.num_envs=2", "ppo.rollout_steps=32",
    "train.mini_batch_size=16", "train.total_timesteps=128", "reward.comparisons=4", "reward.initial_fraction=1.0",
    "reward.segment_steps=8", "reward.train_steps=5", "reward.batch_size=4", "eval.episodes=1",
    "reward.poll_seconds=0.2", "reward.label_timeout=600", "reward.question=Which cart keeps its pole upright?",
]  # fmt: skip
CARTPOLE_WIDTH = 600  # pixels of CartPole-v1's rgb_array frames

ANIMATIONS_LOADED = f"""() => {{
    const images = [...document.querySelectorAll("#responses .animation img")];
    return images.length === 2 && images.every((image) => image.complete && image.naturalWidth === {CARTPOLE_WIDTH});
}}"""


def test_a_labeller_compares_gym_segments_as_animations_and_the_run_learns_from_the_judgements(tmp_path, chromium):
    db = make_db(tmp_path, [], {"boss": True, "ann": False})
    db_path, tokens = db.path, db.tokens
    out, codes = tmp_path / "gym", []
    with LiveServer(db_path) as server:
        command = ["gym", "--out", str(out), "--token", tokens["boss"], "--set", *TINY, f"reward.server={server.url}"]
        run = threading.Thread(target=lambda: codes.append(main(command)))
        run.start()
        assert pushed_round(server.url, {"Authorization": f"Bearer {tokens['boss']}"})["tasks"] == 4

        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, server.url, tokens["ann"])
        for task_id, key in zip((1, 2, 3, 4), ("ArrowLeft", "ArrowRight", "3", "ArrowLeft")):  # A, B, a tie, A
            expect(page.locator("#task")).to_have_attribute("data-task-id", str(task_id))
            expect(page.locator("#prompt")).to_have_text("Which cart keeps its pole upright?")
            page.wait_for_function(ANIMATIONS_LOADED)  # both GIFs, side by side, in place of the responses' text
            captions = page.locator("#responses .animation figcaption").all_text_contents()
            assert all(caption.startswith("environment ") for caption in captions) and len(set(captions)) == 2
            assert page.locator("#responses .response .text").count() == 0
            answer_and_wait(page, task_id, lambda key=key: page.keyboard.press(key))
        expect(page.locator("#done")).to_be_visible()
        run.join()
        context.close()
    assert codes == [0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparisons"] == 4 and summary["updates"] == 2
