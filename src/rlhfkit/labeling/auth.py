"""Who is asking: a labeller's token from `Authorization: Bearer` or from the sign-in cookie.

Scripts send the bearer header; the page signs in once and keeps the token in
an HttpOnly, SameSite=Strict cookie. A browser attaches that cookie by
itself, also to a form another site (or another port on this host: ports do
not separate cookies) posts here, so a cookie-signed-in request that changes
anything must also carry `X-CSRF-Token`, derived from the token. Only this
origin's scripts can read it (from /api/me), and a cross-site form cannot set
a header, so such a forged post is refused with 403.
"""

from __future__ import annotations

import hmac
import sqlite3
from dataclasses import dataclass

from fastapi import HTTPException, Request

from rlhfkit.labeling.labelers import Labeler, csrf_token, find_labeler

COOKIE_NAME = "rlhfkit_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Credentials:
    token: str
    from_cookie: bool


def credentials(request: Request) -> Credentials | None:
    """The token the request carries: the Authorization header wins over the cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return Credentials(token.strip(), from_cookie=False) if scheme.lower() == "bearer" and token.strip() else None
    cookie = request.cookies.get(COOKIE_NAME)
    return Credentials(cookie, from_cookie=True) if cookie else None


def authenticate(request: Request, conn: sqlite3.Connection) -> Labeler:
    """The labeller behind the request; raises 401 (no or unknown token) or 403 (cookie without CSRF proof)."""
    found = credentials(request)
    if found is None:
        raise HTTPException(401, "sign in: send Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})
    if found.from_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(found.token).encode()):
            raise HTTPException(403, f"cross-site request refused: a signed-in page sends {CSRF_HEADER}")
    labeler = find_labeler(conn, found.token)
    if labeler is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return labeler
