"""Who may do what: tokens, admin routes, the sign-in cookie and CSRF, security headers."""

from __future__ import annotations

import re

import httpx
import pytest
from label_helpers import LiveServer, make_db, pair_tasks

API = [
    ("GET", "/api/me"),
    ("GET", "/api/tasks/next"),
    ("POST", "/api/judgements"),
    ("DELETE", "/api/session"),
    ("GET", "/api/admin/progress"),
    ("GET", "/api/admin/agreement"),
    ("GET", "/api/admin/export/comparisons.jsonl"),
    ("GET", "/api/admin/export/rankings.jsonl"),
]
ADMIN_API = [route for route in API if route[1].startswith("/api/admin/")]


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path, pair_tasks(2), {"boss": True, "ann": False})


@pytest.fixture
def server(db):
    with LiveServer(db.path) as live:
        yield live


def _call(client, method, path):
    return client.request(method, path, json={"task_id": 1, "choice": "A"} if method == "POST" else None)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YW5uOmFubg=="}, {"Authorization": "Bearer"}],
)
def test_api_without_a_valid_token_is_401(db, server, headers):
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for method, path in API:
            response = _call(client, method, path)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert db.query("SELECT count(*) FROM assignments") == [(0,)]


def test_a_labellers_token_on_admin_routes_is_403(db, server):
    with httpx.Client(base_url=server.url, headers=db.headers("ann")) as ann:
        for method, path in ADMIN_API:
            assert _call(ann, method, path).status_code == 403, path
        page = ann.get("/admin")
        assert page.status_code == 403 and "Admins only" in page.text and "admin.js" not in page.text
    with httpx.Client(base_url=server.url, headers=db.headers("boss")) as boss:
        assert all(_call(boss, method, path).status_code == 200 for method, path in ADMIN_API)
        assert boss.get("/admin").status_code == 200


def test_pages_without_a_valid_token_show_the_sign_in_page_with_401(server):
    with httpx.Client(base_url=server.url) as client:
        for path in ("/", "/admin"):
            page = client.get(path)
            assert page.status_code == 401, path
            assert 'id="signin-form"' in page.text and "label.js" not in page.text and "admin.js" not in page.text
        client.cookies.set("rlhfkit_token", "forged")
        assert client.get("/").status_code == 401


def test_sign_in_sets_a_strict_httponly_cookie_only_for_a_known_token(db, server):
    with httpx.Client(base_url=server.url) as client:
        refused = client.post("/api/session", json={"token": "guess"})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        # a cross-site form can only send form or text/plain bodies: not a sign-in
        plain = client.post(
            "/api/session", content=f'{{"token": "{db.tokens["ann"]}"}}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 422 and "set-cookie" not in plain.headers
        accepted = client.post("/api/session", json={"token": db.tokens["ann"]})
        assert accepted.status_code == 204
        cookie = accepted.headers["set-cookie"].lower()
        assert cookie.startswith(f"rlhfkit_token={db.tokens['ann']}".lower())
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert client.get("/").status_code == 200
        assert (
            client.delete(
                "/api/session", headers={"X-CSRF-Token": client.get("/api/me").json()["csrf_token"]}
            ).status_code
            == 204
        )
        assert client.get("/").status_code == 401


def test_a_cookie_signed_in_post_needs_the_csrf_header(db, server):
    with httpx.Client(base_url=server.url) as client:
        client.post("/api/session", json={"token": db.tokens["ann"]}).raise_for_status()
        task_id = client.get("/api/tasks/next").json()["task_id"]
        # a forged cross-site form post: the browser attaches the cookie, but cannot add a header
        forged = client.post(
            "/api/judgements",
            data={"task_id": str(task_id), "choice": "A"},
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert forged.status_code == 403 and "cross-site request refused" in forged.json()["detail"]
        wrong = client.post(
            "/api/judgements", json={"task_id": task_id, "choice": "A"}, headers={"X-CSRF-Token": "0" * 64}
        )
        assert wrong.status_code == 403
        assert db.query("SELECT count(*) FROM judgements") == [(0,)]
        csrf = client.get("/api/me").json()["csrf_token"]
        assert (
            client.post(
                "/api/judgements", json={"task_id": task_id, "choice": "A"}, headers={"X-CSRF-Token": csrf}
            ).status_code
            == 201
        )
    assert db.query("SELECT task_id, choice FROM judgements") == [(task_id, "A")]


def test_every_response_carries_the_security_headers_and_no_cors(db, server):
    with httpx.Client(base_url=server.url, headers=db.headers("ann")) as client:
        responses = [
            client.get("/"),
            client.get("/api/me"),
            client.get("/static/label.js"),
            client.get("/api/tasks/next"),
        ]
        with httpx.Client(base_url=server.url) as anonymous:
            responses.append(anonymous.get("/"))
            preflight = anonymous.options(
                "/api/judgements", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
            )
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    # a preflight carries no token: refused like any other API call, and never with a CORS grant
    assert preflight.status_code == 401 and "access-control-allow-origin" not in preflight.headers


def test_pages_hold_no_inline_script():
    from rlhfkit.labeling.app import STATIC

    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert html.count("<script") == html.count('<script type="module" src="/static/'), page.name
        assert re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE) is None, page.name  # no onclick= and the like
