"""Hostile requests against the real app: token before body, size limit, 64-bit ids, headers on errors, rate limit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import pytest
from fastapi.testclient import TestClient
from label_helpers import make_db, pair_tasks, streamed_body

from rlhfkit.labeling.app import ServeSettings, create_app
from rlhfkit.labeling.guard import SECURITY_HEADERS, TokenBucket

LIMIT = ServeSettings().max_body_bytes
KIB = 1024


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path, pair_tasks(3), {"boss": True, "ann": False, "bob": False})


def call_app(app, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, dict, int]:
    """Drive the ASGI app as a server would; returns (status, response headers, body chunks the app asked for)."""
    asked = 0
    sent: list[dict] = []
    pending = iter(chunks)

    async def receive() -> dict:
        nonlocal asked
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    anyio.run(app, scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, asked


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json", "Content-Length": str(50 * 1024 * KIB)},
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        {"Content-Type": "application/json", "Authorization": "Bearer forged", "Transfer-Encoding": "chunked"},
    ],
)
def test_without_a_valid_token_not_one_body_byte_is_read(db, headers):
    status, response_headers, asked = call_app(
        create_app(db.path, ServeSettings()), "POST", "/api/judgements", headers, streamed_body(50)
    )
    assert (status, asked) == (401, 0)
    assert response_headers["www-authenticate"].startswith("Bearer")
    assert response_headers["connection"] == "close"  # the server stops reading what the client still sends


def test_a_declared_oversize_body_is_refused_unread_and_a_streamed_one_at_the_limit(db):
    app = create_app(db.path, ServeSettings())
    token = {"Authorization": f"Bearer {db.tokens['ann']}", "Content-Type": "application/json"}
    declared = call_app(app, "POST", "/api/judgements", token | {"Content-Length": str(LIMIT + 1)}, streamed_body(1))
    assert (declared[0], declared[2]) == (413, 0)
    chunks = (b"x" * (64 * KIB) for _ in range(100))
    streamed = call_app(app, "POST", "/api/judgements", token | {"Transfer-Encoding": "chunked"}, chunks)
    # 4 chunks are exactly the limit; the 5th goes over it, and nothing more is read
    assert (streamed[0], streamed[2]) == (413, LIMIT // (64 * KIB) + 1)
    assert streamed[1]["connection"] == "close"
    assert db.query("SELECT count(*) FROM judgements") == [(0,)]


def test_the_longest_real_judgement_fits_the_limit(db):
    with TestClient(create_app(db.path, ServeSettings()), headers=db.headers("ann")) as ann:
        task_id = ann.get("/api/tasks/next").json()["task_id"]
        # 5000 characters outside the BMP, each escaped by a client as two \\uXXXX: the largest comment there is
        body = json.dumps({"task_id": task_id, "choice": "A", "comment": "\U0001f600" * 5000})
        assert len(body) > 50_000
        posted = ann.post("/api/judgements", content=body, headers={"Content-Type": "application/json"})
    assert posted.status_code == 201


def test_malformed_json_or_an_oversize_body_without_a_token_is_401(db):
    with TestClient(create_app(db.path, ServeSettings())) as anonymous:
        malformed = anonymous.post(
            "/api/judgements", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        oversize = anonymous.post("/api/judgements", content=b"x" * (2 * LIMIT))
    assert malformed.status_code == 401 and oversize.status_code == 401


@pytest.mark.parametrize(
    "task_id, status",
    [(2**63, 422), (-(2**63) - 1, 422), (10**30, 422), (2**63 - 1, 404), (-(2**63), 404)],
)
def test_ids_are_64_bit_signed_integers(db, task_id, status):
    with TestClient(create_app(db.path, ServeSettings()), headers=db.headers("ann")) as ann:
        response = ann.post("/api/judgements", json={"task_id": task_id, "choice": "A"})
    assert response.status_code == status
    if status == 422:
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "task_id"]
        assert (
            error["msg"].startswith("Input should be") and str(2**63 - 1 if task_id > 0 else -(2**63)) in error["msg"]
        )
    else:
        assert response.json()["detail"] == f"no task {task_id}"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 422),
        (b'{"task_id": ' + b"9" * 5000 + b', "choice": "A"}', 400),  # more digits than Python will parse
        (b"[" * 100_000 + b"]" * 100_000, 400),  # deeper than the JSON parser recurses
        (b'{"task_id": 1, "choice": "A", "ranking": [' + b"0," * 50_000 + b"1]}", 422),
        (b'{"task_id": true, "choice": "A"}', 422),
        ("\udcff".encode("utf-8", "surrogatepass"), 422),
    ],
)
def test_malformed_bodies_from_a_labeller_get_4xx_and_store_nothing(db, body, status):
    with TestClient(create_app(db.path, ServeSettings()), headers=db.headers("ann")) as ann:
        ann.get("/api/tasks/next")
        response = ann.post("/api/judgements", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert db.query("SELECT count(*) FROM judgements") == [(0,)]


def test_every_response_carries_the_security_headers_errors_and_500_included(db):
    app = create_app(db.path, ServeSettings(requests_per_second=0.01, burst=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        ann, boss = db.headers("ann"), db.headers("boss")
        responses = {
            200: client.get("/", headers=ann),
            401: client.post("/api/judgements", content=b"{", headers={"Content-Type": "application/json"}),
            403: client.get("/api/admin/progress", headers=ann),
            404: client.get("/static/nope.js"),
            405: client.put("/static/label.js"),
            413: client.post("/api/judgements", content=b"x" * (LIMIT + 1), headers=boss),
            422: client.post("/api/judgements", json={"task_id": 2**63, "choice": "A"}, headers=boss),
            429: [client.get("/api/me", headers=ann) for _ in range(2)][-1],  # ann's third API request
        }
        db.query("ALTER TABLE judgements RENAME TO judgements_gone")  # the database breaks under the server
        responses[500] = client.get("/api/me", headers=db.headers("bob"))
    for status, response in responses.items():
        assert response.status_code == status
        assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, status
    assert responses[500].json() == {"detail": "internal server error"}  # nothing of the exception leaks


def test_each_labeller_has_a_rate_limit_answered_with_429_and_retry_after(db):
    app = create_app(db.path, ServeSettings(requests_per_second=0.5, burst=3))
    with TestClient(app) as client:
        for _ in range(5):  # refused requests without a valid token spend nobody's allowance
            assert client.get("/api/me", headers={"Authorization": "Bearer forged"}).status_code == 401
        allowed = [client.get("/api/me", headers=db.headers("ann")).status_code for _ in range(3)]
        refused = client.get("/api/me", headers=db.headers("ann"))
        bob = client.get("/api/me", headers=db.headers("bob"))
    assert allowed == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"  # one token at 0.5 a second, rounded up to whole seconds
    assert refused.json()["detail"] == "too many requests: at most 0.5 a second (bursts of 3) per labeller"
    assert bob.status_code == 200


def test_token_bucket_by_hand():
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # empty: one token takes 1/2 s
    assert bucket.take(0.25) == 0.25  # half a token gained, half still missing: 0.5 / 2
    assert bucket.take(0.5) == 0.0  # one whole token by now, spent
    assert bucket.take(100.0) == 0.0 and bucket.tokens == 2.0  # a long pause refills only up to the burst
