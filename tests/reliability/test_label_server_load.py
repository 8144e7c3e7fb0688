"""The labelling server as people and attackers meet it: load, a kill -9 and a restart, bad requests, a memory flood.

`rlhfkit label serve` runs in its own process, as a person starts it. Twenty
labellers work through 25 judgements each, in threads, retrying when the
server is gone (as the page does) and waiting out a 429's Retry-After. Partway
through, the server is killed with SIGKILL and started again. Meanwhile a
twenty-first client sends oversize, chunked, malformed and out-of-range
requests. Afterwards four clients without a token each stream a 50 MB body at
it while its memory is sampled.

What must hold: every acknowledged (201) judgement is stored, nothing is
stored twice, and what is stored but was never acknowledged is exactly the
judgements whose reply the kill swallowed (a retry finds them "already
answered"); no bad request is served or gets a 5xx; the server stays under
200 MB. Latency is printed, not asserted (timing belongs to a quiet machine).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from label_helpers import LabelDB, free_port, make_db, pair_tasks, start_server, streamed_body

LABELLERS = 20
JUDGEMENTS_EACH = 25
KILL_AFTER = 200  # acknowledged judgements, of 500, before the server is killed
FLOOD_CLIENTS = 4
FLOOD_MIB = 50
RSS_LIMIT_MB = 200
FLOOD_GROWTH_LIMIT_MB = 20  # buffering the bodies would add 200 MB; reading none of them adds next to nothing
GIVE_UP_S = 300  # a client that cannot reach the server for this long reports a failure instead of hanging the test


@dataclass
class Labeller:
    name: str
    token: str
    acknowledged: list[tuple[int, int]] = field(default_factory=list)  # (judgement id, task id) from each 201
    recovered: list[int] = field(default_factory=list)  # task ids a retried POST found stored by the killed server
    latencies_s: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds to the response)
    throttled: int = 0
    failures: list[str] = field(default_factory=list)

    def call(self, client: httpx.Client, method: str, path: str, **kwargs) -> tuple[httpx.Response, bool]:
        """The response, and whether the request had to be sent again after the connection failed."""
        resent = False
        deadline = time.monotonic() + GIVE_UP_S
        while True:
            started = time.perf_counter()
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                resent = True
                time.sleep(0.05)
                continue
            if response.status_code == 429:
                self.throttled += 1
                time.sleep(float(response.headers["retry-after"]))
                continue
            self.latencies_s.append((started, time.perf_counter() - started))
            return response, resent

    def work(self, url: str, start: threading.Barrier) -> None:
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as client:
                start.wait()
                while len(self.acknowledged) + len(self.recovered) < JUDGEMENTS_EACH:
                    task, _ = self.call(client, "GET", "/api/tasks/next")
                    if task.status_code != 200:
                        self.failures.append(f"GET next: {task.status_code} {task.text}")
                        return
                    task_id = task.json()["task_id"]
                    posted, resent = self.call(
                        client, "POST", "/api/judgements", json={"task_id": task_id, "choice": "A"}
                    )
                    if posted.status_code == 201:
                        self.acknowledged.append((posted.json()["id"], task_id))
                    elif resent and posted.status_code == 409 and "already answered" in posted.json()["detail"]:
                        self.recovered.append(task_id)
                    else:
                        self.failures.append(f"POST task {task_id}: {posted.status_code} {posted.text}")
                        return
        except Exception as error:  # reported by the test, with the labeller's name
            self.failures.append(repr(error))


def bad_requests(token: str) -> list[tuple[str, dict, set]]:
    """(kind, request arguments, statuses that refuse it properly); "closed" is the server cutting the upload off."""
    bearer = {"Authorization": f"Bearer {token}"}
    as_json = {"Content-Type": "application/json"}
    return [
        ("declared oversize", {"content": b"x" * 1024 * 1024, "headers": bearer}, {413, "closed"}),
        ("streamed oversize", {"content": streamed_body(1), "headers": bearer | as_json}, {413, "closed"}),
        ("malformed JSON", {"content": b'{"task_id": 1,', "headers": bearer | as_json}, {422}),
        ("id over 2^63", {"json": {"task_id": 2**63, "choice": "A"}, "headers": bearer}, {422}),
        ("task not shown", {"json": {"task_id": 1, "choice": "A"}, "headers": bearer}, {409}),
        ("malformed, no token", {"content": b"{", "headers": as_json}, {401}),
        ("oversize, no token", {"content": streamed_body(1), "headers": as_json}, {401, "closed"}),
    ]


def sabotage(url: str, token: str, stop: threading.Event, outcomes: Counter) -> None:
    """Bad requests, round after round, until the labellers are done; a 429 and a server down are fine too."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            for kind, arguments, _ in bad_requests(token):
                try:
                    status = client.post("/api/judgements", **arguments).status_code
                except httpx.TransportError:
                    status = "closed"
                outcomes[kind, status] += 1
            stop.wait(0.1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def flood(url: str, pid: int) -> tuple[float, float, list]:
    """FLOOD_CLIENTS parallel 50 MB posts without a token; returns (RSS before, peak RSS during, outcomes)."""
    outcomes: list = []

    def post() -> None:
        try:
            response = httpx.post(
                f"{url}/api/judgements",
                content=streamed_body(FLOOD_MIB),
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            outcomes.append(response.status_code)
        except httpx.TransportError:
            outcomes.append("closed")

    before = peak = rss_mb(pid)
    clients = [threading.Thread(target=post) for _ in range(FLOOD_CLIENTS)]
    for client in clients:
        client.start()
    while any(client.is_alive() for client in clients):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.005)
    return before, max(peak, rss_mb(pid)), outcomes


def run_load(db: LabelDB, labellers: list[Labeller], port: int) -> dict:
    """The load with one kill -9 and restart, the saboteur alongside, then the flood; returns what was seen."""
    url = f"http://127.0.0.1:{port}"
    server = start_server(db, port)
    stop, outcomes = threading.Event(), Counter()
    saboteur = threading.Thread(target=sabotage, args=(url, db.tokens["mallory"], stop, outcomes))
    start = threading.Barrier(LABELLERS)
    threads = [threading.Thread(target=labeller.work, args=(url, start)) for labeller in labellers]
    try:
        for thread in [*threads, saboteur]:
            thread.start()
        started_at = time.perf_counter()
        while sum(len(labeller.acknowledged) for labeller in labellers) < KILL_AFTER:
            assert any(thread.is_alive() for thread in threads), [labeller.failures for labeller in labellers]
            time.sleep(0.01)
        killed_at = time.perf_counter()
        server.kill()
        server.wait()
        acknowledged_at_kill = sum(len(labeller.acknowledged) for labeller in labellers)
        server = start_server(db, port)
        restarted_at = time.perf_counter()
        for thread in threads:
            thread.join()
        loaded_at = time.perf_counter()
        stop.set()
        saboteur.join()
        rss_before, rss_peak, flooded = flood(url, server.pid)
    finally:
        stop.set()
        server.kill()
        server.wait()
    return {
        "down": (killed_at, restarted_at),
        "seconds": {"restart": restarted_at - killed_at, "load": loaded_at - started_at},
        "acknowledged_at_kill": acknowledged_at_kill,
        "sabotage": outcomes,
        "rss_before": rss_before,
        "rss_peak": rss_peak,
        "flooded": flooded,
    }


def test_load_kill_restart_bad_requests_and_flood_lose_nothing_and_stay_small(tmp_path, capsys):
    names = [f"labeller{i:02d}" for i in range(LABELLERS)]
    db = make_db(tmp_path, pair_tasks(LABELLERS * JUDGEMENTS_EACH), {name: False for name in [*names, "mallory"]})
    labellers = [Labeller(name, db.tokens[name]) for name in names]
    seen = run_load(db, labellers, free_port())

    assert {labeller.name: labeller.failures for labeller in labellers if labeller.failures} == {}
    stored = set(db.query("SELECT j.id, j.task_id, l.name FROM judgements j JOIN labelers l ON l.id = j.labeler_id"))
    acknowledged = {(jid, task_id, labeller.name) for labeller in labellers for jid, task_id in labeller.acknowledged}
    recovered = {(task_id, labeller.name) for labeller in labellers for task_id in labeller.recovered}
    lost = acknowledged - stored
    unacknowledged = {(task_id, name) for _, task_id, name in stored - acknowledged}
    assert lost == set()
    assert unacknowledged == recovered  # stored without a 201 only where the kill swallowed the reply
    assert sorted(task_id for _, task_id, _ in stored) == list(range(1, LABELLERS * JUDGEMENTS_EACH + 1))  # once each
    for kind, status in seen["sabotage"]:
        expected = next(statuses for name, _, statuses in bad_requests("") if name == kind)
        assert status in expected | {429, "closed"}, (kind, status)
    assert set(seen["flooded"]) <= {401, "closed"} and len(seen["flooded"]) == FLOOD_CLIENTS
    assert seen["rss_peak"] < RSS_LIMIT_MB
    assert seen["rss_peak"] - seen["rss_before"] < FLOOD_GROWTH_LIMIT_MB  # 200 MB posted, none of it held

    timed = [timing for labeller in labellers for timing in labeller.latencies_s]
    p99 = statistics.quantiles([seconds for _, seconds in timed], n=100)[98]
    down_from, down_to = seen["down"]
    steady = [seconds for sent, seconds in timed if sent + seconds < down_from or sent > down_to]
    steady_p50, steady_p99 = statistics.median(steady), statistics.quantiles(steady, n=100)[98]
    with capsys.disabled():
        print(
            f"\nlabel server load: {LABELLERS} labellers x {JUDGEMENTS_EACH}: {len(acknowledged)} acknowledged "
            f"({seen['acknowledged_at_kill']} before the kill -9), {len(recovered)} stored by the killed server "
            f"without a reply, {len(stored)} stored, {len(lost)} lost, 0 duplicated; "
            f"{len(timed)} requests: p99 {1000 * p99:.0f} ms; the {len(steady)} not waiting out the restart: "
            f"p50 {1000 * steady_p50:.0f} ms, p99 {1000 * steady_p99:.0f} ms; "
            f"load {seen['seconds']['load']:.1f} s, restart {seen['seconds']['restart']:.1f} s; "
            f"{sum(labeller.throttled for labeller in labellers)} 429s; "
            f"bad requests {dict(sorted(seen['sabotage'].items(), key=str))}; "
            f"flood of {FLOOD_CLIENTS} x {FLOOD_MIB} MB without a token: {seen['flooded']}, "
            f"RSS {seen['rss_before']:.0f} MB before, {seen['rss_peak']:.0f} MB peak"
        )
