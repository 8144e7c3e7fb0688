"""People as the loop's labellers: a running `rlhfkit label serve`, driven through its admin API.

    push     PUT  /api/admin/loop/{run}/rounds/{round}          the round's pairs become tasks (idempotent)
    wait     GET  /api/admin/loop/{run}/rounds/{round}          judgements so far, and their comparisons
    report   PUT  /api/admin/loop/{run}/rounds/{round}/summary  the round's figures, for the admin page

The loop pushes a round's pairs, polls until `loop.labels_per_round` judgements of them have
arrived, and takes their comparison records. The server's database keeps every judgement, so a
loop stopped while waiting (a timeout, Ctrl-C, a crash) loses nothing: run again, it pushes the
same pairs (already there), and finds the judgements made meanwhile.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import httpx

from rlhfkit.errors import UserError

Record = dict[str, Any]
TOKEN_ENV = "RLHFKIT_LABEL_TOKEN"


def run_id(out: Path) -> str:
    """A loop's name on the server: its directory's name and a hash of its absolute path (two loops never mix)."""
    resolved = out.resolve()
    name = re.sub(r"[^A-Za-z0-9._-]", "-", resolved.name)[:40] or "loop"
    return f"{name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


class LabelServer:
    """The admin side of a labelling server, for one loop run."""

    def __init__(self, url: str, token: str, run: str, timeout_s: float = 30.0):
        if not token:
            raise UserError(
                f"--server needs an admin's token: --token T (or {TOKEN_ENV}); see `rlhfkit label add-labeler`"
            )
        self.url, self.run = url.rstrip("/"), run
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None, content: bytes | None = None) -> Any:
        """One API call (a JSON `body` or raw `content`); an unreachable server or a refusal is one UserError line.

        Over the server's rate for this token (429), it waits as long as the server says and asks again.
        """
        try:
            while True:
                response = self.client.request(method, path, json=body, content=content)
                if response.status_code != 429:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
        except httpx.TransportError as error:
            raise UserError(
                f"cannot reach the labelling server at {self.url} ({type(error).__name__}: {error}); start it with "
                "`rlhfkit label serve` or fix --server, then rerun the same command (nothing is lost)"
            ) from None
        if response.status_code in (401, 403):
            raise UserError(f"the labelling server at {self.url} refused the token: --token must be an admin's")
        if response.status_code >= 400:
            raise UserError(f"the labelling server at {self.url} answered {response.status_code} to {method} {path}: "
                            f"{response.text[:200]}")  # fmt: skip
        return response.json() if response.content else None

    def check(self) -> None:
        """Reachable, and the token is an admin's: checked before any model loads."""
        if not self.request("GET", "/api/me")["admin"]:
            raise UserError(f"the labelling server at {self.url} refused the token: --token must be an admin's")

    def rounds_path(self, round_number: int) -> str:
        return f"/api/admin/loop/{self.run}/rounds/{round_number}"

    def push(self, round_number: int, pairs: list[Record], needed: int) -> None:
        self.request("PUT", self.rounds_path(round_number), {"needed": needed, "records": pairs})

    def status(self, round_number: int, keep_ties: bool = False) -> Record:
        """The round's judgements so far; `keep_ties`: ties among its comparisons too (label 0.5)."""
        return self.request("GET", self.rounds_path(round_number) + ("?keep_ties=true" if keep_ties else ""))

    def upload(self, digest: str, gif: bytes) -> None:
        """A response's animation (a GIF), stored under its SHA-256 `digest` for a round's records to name."""
        self.request("PUT", f"/api/admin/loop/media/{digest}", content=gif)

    def report(self, round_number: int, result: Record) -> None:
        self.request("PUT", f"{self.rounds_path(round_number)}/summary", result)


class ServerLabeller:
    """People label: push the pairs, wait for `needed` judgements (at most `timeout_s`), take their comparisons.

    The command that waits (`command`: the loop, or `rlhfkit gym`) names its timeout key and how to continue
    after it in the one line a timeout stops with; `keep_ties`: ties come back as comparisons labelled 0.5.
    """

    def __init__(
        self,
        server: LabelServer,
        needed: int,
        timeout_s: float,
        poll_s: float,
        *,
        keep_ties: bool = False,
        command: str = "loop",
        timeout_key: str = "loop.label_timeout",
        continue_with: str = "rerun the same command",
    ):
        self.server, self.needed, self.timeout_s, self.poll_s = server, needed, timeout_s, poll_s
        self.keep_ties, self.command = keep_ties, command
        self.timeout_key, self.continue_with = timeout_key, continue_with

    def label(self, round_number: int, pairs: list[Record]) -> list[Record]:
        needed = min(self.needed, len(pairs))
        self.server.push(round_number, pairs, needed)
        deadline = time.monotonic() + self.timeout_s
        announced = False
        while True:
            status = self.server.status(round_number, self.keep_ties)
            if status["judged"] >= needed:
                return status["comparisons"]
            if time.monotonic() >= deadline:
                raise UserError(
                    f"round {round_number}: {status['judged']} of {needed} judgements arrived at {self.server.url} "
                    f"within {self.timeout_key}={self.timeout_s:g} s; label the rest on the page, then "
                    f"{self.continue_with} to continue (what arrived is kept)"
                )
            if not announced:
                print(f"rlhfkit {self.command}: round {round_number}: waiting for {needed} judgements at "
                      f"{self.server.url}/", flush=True)  # fmt: skip
                announced = True
            time.sleep(self.poll_s)
