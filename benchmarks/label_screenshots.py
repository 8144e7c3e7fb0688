"""Screenshots of the labelling app for the docs: docs/img/label-page.png and docs/img/admin-page.png.

Starts `rlhfkit label serve` on sample candidates in a temporary folder,
signs an admin in with headless Chromium and saves the first task's page;
then two labellers answer a few tasks through the JSON API, so that the
admin page has progress and agreement to show, and saves that.

    .venv/bin/python benchmarks/label_screenshots.py [--out-dir docs/img]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from rlhfkit.cli import main as rlhfkit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

SAMPLES = [
    {
        "prompt": "Explain what a reward model is in RLHF, in two or three sentences.",
        "responses": [
            "A reward model is a network trained on human preference pairs to predict which of two responses "
            "people prefer. Its scalar score then stands in for a person during PPO, so the policy can be "
            "optimised against many more samples than anyone could label by hand.",
            "It is the model that gives rewards.\n\nBasically you train it and then it tells the policy what is good. "
            "RLHF uses it a lot.",
        ],
    },
    {
        "prompt": "Write a haiku about autumn rain.",
        "responses": [
            "Cold rain on maples\nred leaves loosen, one by one\nthe gutter fills gold",
            "Rain falls in autumn. It is wet and it is cold. I like the season.",
        ],
    },
    {
        "prompt": "What is 17 * 23?",
        "responses": ["17 * 23 = 391.", "381"],
    },
    {
        "prompt": "Give one tip for writing clear error messages.",
        "responses": [
            "Name what was wrong, where, and what was expected: `config.yaml:12: batch_size must be positive, got 0`.",
            "Make them short.",
        ],
    },
    {
        "prompt": "Suggest a name for a grey cat.",
        "responses": ["Ash", "Mister Fluffington the Third, Duke of Greyshire", "Smokey", "Cat"],
    },
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _add_labeler(db: Path, name: str, admin: bool) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = rlhfkit(["label", "add-labeler", name, "--db", str(db)] + (["--admin"] if admin else []))
    if code != 0:
        raise SystemExit(f"add-labeler {name} failed with exit code {code}")
    return printed.getvalue().strip().splitlines()[-1]


def _wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=2)
            return
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not start within 60 s")


def _answer(url: str, token: str, tasks: int, contrary: set[int]) -> None:
    """One labeller answers `tasks` tasks through the JSON API.

    The longer response wins, except on the answers numbered in `contrary`.
    """
    headers = {"Authorization": f"Bearer {token}"}
    for number in range(tasks):
        task = httpx.get(f"{url}/api/tasks/next", headers=headers).json()
        by_length = sorted(range(len(task["responses"])), key=lambda position: -len(task["responses"][position]))
        if number in contrary:
            by_length.reverse()
        answer = {"choice": "AB"[by_length[0]]} if len(by_length) == 2 else {"ranking": by_length}
        httpx.post(
            f"{url}/api/judgements", headers=headers, json={"task_id": task["task_id"], **answer}
        ).raise_for_status()


def take_screenshots(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        tasks, db = work / "candidates.jsonl", work / "labels.sqlite"
        tasks.write_text("".join(json.dumps(sample) + "\n" for sample in SAMPLES))
        admin = _add_labeler(db, "ana", admin=True)
        ben, chloe = _add_labeler(db, "ben", admin=False), _add_labeler(db, "chloe", admin=False)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "rlhfkit",
            "label",
            "serve",
            "--tasks",
            str(tasks),
            "--db",
            str(db),
            "--port",
            str(port),
            "--judgements-per-task",
            "2",
        ]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_until_up(url, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 600}, device_scale_factor=1)
                page.goto(url)
                page.fill("#token", admin)
                page.click("button[type=submit]")
                page.wait_for_selector("#task:not([hidden]) .response")
                page.screenshot(path=str(out_dir / "label-page.png"), full_page=True)
                _answer(url, ben, tasks=4, contrary=set())
                _answer(url, chloe, tasks=4, contrary={0})
                page.goto(f"{url}/admin")
                page.wait_for_selector("#labelers tbody tr")
                page.screenshot(path=str(out_dir / "admin-page.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {out_dir / 'label-page.png'} and {out_dir / 'admin-page.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img")
    take_screenshots(parser.parse_args().out_dir)
