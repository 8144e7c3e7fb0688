"""End to end in headless Chromium: sign in, label with mouse and keys, rank, and check the exports exactly."""

from __future__ import annotations

import http.server
import io
import json
import re
import threading
from contextlib import redirect_stdout

import pytest
from label_helpers import LiveServer, make_db
from playwright.sync_api import expect

from rlhfkit.cli import main

pytestmark = pytest.mark.browser

PAIRS = [
    {"prompt": "Say hello.", "responses": ["Hello!", "Go away."]},
    {"prompt": "2 + 2?", "responses": ["4", "5"]},
    {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        "responses": ["Paris", "Lyon"],
    },
    {"prompt": "Name a colour.", "responses": ["Blue", "Red"]},
    {"prompt": "Skip me.", "responses": ["meh", "bleh"]},
]


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in(page, url, token):
    response = page.goto(url)
    assert response.status == 401  # the sign-in page, until a token is given
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("#who")).not_to_be_empty()


def shown_task(page, task_id):
    """(task id, prompt text, response texts in the order shown) once task `task_id` is on screen."""
    expect(page.locator("#task")).to_have_attribute("data-task-id", str(task_id))
    expect(page.locator("#task")).to_be_visible()
    texts = page.locator("#responses .response .text").all_text_contents()
    return task_id, page.text_content("#prompt"), texts


def answer_and_wait(page, task_id, act):
    act()
    expect(page.locator("#status")).to_have_text(f"Saved task {task_id}.")


def export(db, *extra):
    out = db.path.parent / "out.jsonl"
    with redirect_stdout(io.StringIO()):
        assert main(["label", "export", "--db", str(db.path), "--out", str(out), *extra]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["meta"].pop("judged_at"))
    return records


def test_label_with_mouse_and_keyboard_then_export_exactly(tmp_path, page):
    db = make_db(tmp_path, PAIRS, {"ann": False, "bob": False})
    expected = []
    with LiveServer(db.path) as server:
        sign_in(page, server.url, db.tokens["ann"])
        expect(page.locator("#progress")).to_have_text("0 judged · 5 left")

        def expect_comparison(task_id, winner, loser, choice, comment="", label=None):
            record = PAIRS[task_id - 1]
            key = "prompt" if "prompt" in record else "messages"
            entry = {key: record[key], "chosen": winner, "rejected": loser}
            if label is not None:
                entry["label"] = label
            order = [record["responses"].index(text) for text in shown[task_id][2]]
            entry["meta"] = {
                "task_id": task_id,
                "labeler": "ann",
                "choice": choice,
                "shown_order": order,
                "comment": comment,
            }
            expected.append(entry)

        shown = {}
        # 1: the mouse, with a comment
        _, prompt, (a, b) = shown[1] = shown_task(page, 1)
        assert prompt == "Say hello."
        page.click("#comment")
        page.keyboard.type("A greets")
        answer_and_wait(page, 1, lambda: page.click("button[data-choice=A]"))
        expect_comparison(1, a, b, "A", comment="A greets")
        # 2: keys only: "c" into the comment box, Esc out of it, "2" (B is better)
        _, _, (a, b) = shown[2] = shown_task(page, 2)
        assert page.input_value("#comment") == ""
        for key in ("c", "2", "Escape"):  # the "2" typed in the box is text, not an answer
            page.keyboard.press(key)
        answer_and_wait(page, 2, lambda: page.keyboard.press("2"))
        expect_comparison(2, b, a, "B", comment="2")
        # 3: the left arrow (A); a chat record shows its last user message
        _, prompt, (a, b) = shown[3] = shown_task(page, 3)
        assert prompt == "Capital of France?"
        answer_and_wait(page, 3, lambda: page.keyboard.press("ArrowLeft"))
        expect_comparison(3, a, b, "A")
        # 4: "t" for a tie, kept by --keep-ties in the candidates file's order
        shown[4] = shown_task(page, 4)
        answer_and_wait(page, 4, lambda: page.keyboard.press("t"))
        expect_comparison(4, "Blue", "Red", "tie", label=0.5)
        # 5: skipped with the mouse
        shown_task(page, 5)
        answer_and_wait(page, 5, lambda: page.click("#pair-actions button[data-choice=skip]"))

        expect(page.locator("#done")).to_be_visible()
        expect(page.locator("#task")).to_be_hidden()
        expect(page.locator("#progress")).to_have_text("4 judged · 0 left")
        assert page.url == server.url + "/"  # the same page all along: no reload, no navigation

        # the skipped task stays available to others
        bob = page.context.request.get(server.url + "/api/tasks/next", headers=db.headers("bob"))
        assert bob.json()["task_id"] == 5
    assert export(db, "--keep-ties") == expected


def test_rank_with_keys_and_by_dragging(tmp_path, page):
    records = [
        {"prompt": "Rank by keys.", "responses": ["k0", "k1", "k2", "k3"]},
        {"prompt": "Rank by dragging.", "responses": ["d0", "d1", "d2"]},
    ]
    db = make_db(tmp_path, records, {"ann": False})
    with LiveServer(db.path) as server:
        sign_in(page, server.url, db.tokens["ann"])
        _, _, keys_shown = shown_task(page, 1)
        expect(page.locator("#rank-actions")).to_be_visible()
        expect(page.locator("#submit-ranking")).to_be_disabled()
        for key in ("3", "1", "Backspace", "4", "2"):  # C, then A (undone), D, B; the last (A) is implied
            page.keyboard.press(key)
        expect(page.locator("#ranking li.ranked")).to_have_count(4)
        expect(page.locator("#responses .response").nth(2).locator(".rank-badge")).to_have_text("#1")
        answer_and_wait(page, 1, lambda: page.keyboard.press("Enter"))

        _, _, drag_shown = shown_task(page, 2)
        items = page.locator("#ranking li")
        items.nth(2).drag_to(items.nth(0))  # C to the top: C, A, B
        expect(page.locator("#ranking li.ranked")).to_have_count(3)
        answer_and_wait(page, 2, lambda: page.click("#submit-ranking"))
        expect(page.locator("#done")).to_be_visible()
    rankings = db.path.parent / "rankings.jsonl"
    export(db, "--rankings-out", str(rankings))
    got = [json.loads(line) for line in rankings.read_text().splitlines()]
    assert [(r["prompt"], r["responses"]) for r in got] == [
        ("Rank by keys.", [keys_shown[2], keys_shown[3], keys_shown[1], keys_shown[0]]),
        ("Rank by dragging.", [drag_shown[2], drag_shown[0], drag_shown[1]]),
    ]


def test_model_output_is_shown_as_literal_text(tmp_path, page):
    script, bold, image = "<script>alert(1)</script>", "<b>html</b>", '<img src=x onerror="alert(2)">'
    db = make_db(tmp_path, [{"prompt": image, "responses": [script, bold]}], {"ann": False})
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with LiveServer(db.path) as server:
        sign_in(page, server.url, db.tokens["ann"])
        _, prompt, texts = shown_task(page, 1)
        assert prompt == image
        assert sorted(texts) == sorted([script, bold])
        for container in ("#prompt", "#responses"):
            for tag in ("b", "script", "img"):
                assert page.locator(f"{container} {tag}").count() == 0, (container, tag)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.inner_html("#responses")
        page.wait_for_timeout(300)  # give a smuggled handler the chance to fire
    assert dialogs == []


def test_a_forged_cross_site_form_post_is_refused_in_a_real_browser(tmp_path, page):
    db = make_db(tmp_path, [PAIRS[0]], {"ann": False})
    with LiveServer(db.path) as server:
        sign_in(page, server.url, db.tokens["ann"])
        task_id = shown_task(page, 1)[0]
        # another site (another port: cookies do not tell ports apart) that posts a form to the app on load
        forged = (
            f'<form method="POST" action="{server.url}/api/judgements" enctype="text/plain">'
            f'<input name=\'{{"task_id": {task_id}, "choice": "A", "x": "\' value=\'"}}\'></form>'
            "<script>document.forms[0].submit()</script>"
        ).encode()

        class Evil(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(forged)

            def log_message(self, *args):
                pass

        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        try:
            with page.expect_response(f"{server.url}/api/judgements") as posted:
                page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
            response = posted.value
            assert response.status == 403
            assert (
                "cross-site request refused" in response.text()
            )  # the cookie came along; the missing header stopped it
        finally:
            evil.shutdown()
            evil.server_close()
    assert db.query("SELECT count(*) FROM judgements") == [(0,)]


def test_admin_page_shows_progress_and_agreement(tmp_path, page):
    db = make_db(tmp_path, PAIRS[:2], {"boss": True, "ann": False})
    with LiveServer(db.path) as server:
        ann = page.context.request
        task = ann.get(server.url + "/api/tasks/next", headers=db.headers("ann")).json()
        assert (
            ann.post(
                server.url + "/api/judgements",
                headers=db.headers("ann"),
                data={"task_id": task["task_id"], "choice": "tie"},
            ).status
            == 201
        )
        sign_in(page, server.url, db.tokens["boss"])
        page.click("#admin-link")
        expect(page.locator("#labelers tbody tr")).to_have_count(2)
        assert page.locator("#stats .value").all_text_contents() == ["2", "1", "1", "0", "1"]  # boss holds task 2 now
        rows = [row.locator("td").all_text_contents()[:6] for row in page.locator("#labelers tbody tr").all()]
        assert rows == [["ann", "labeller", "1", "0", "1", "0"], ["boss", "admin", "0", "0", "0", "0"]]
        expect(page.locator("#agreement-summary")).to_have_text("No task has been judged by two labellers yet.")
        page.check("#keep-ties")
        assert page.get_attribute("#export-comparisons", "href") == "/api/admin/export/comparisons.jsonl?keep_ties=true"
        with page.expect_download() as download:
            page.click("#export-comparisons")
        lines = open(download.value.path()).read().splitlines()
        assert [json.loads(line)["meta"]["choice"] for line in lines] == ["tie"]
