"""What every request meets before the app reads a byte of its body: headers, token, rate, size.

One ASGI middleware, because the order matters: FastAPI reads (and buffers)
the whole body to validate it before any dependency, such as a token check,
runs. With the check as a dependency, four unauthenticated 50 MB posts took
the server from 48 MB to 613 MB, and malformed JSON without a token got 422
instead of 401. Here an API request is refused with 401 (no
or unknown token), 403 (cookie without CSRF proof) or 429 (over its
labeller's rate) from its headers alone; a declared Content-Length over the
limit gets 413 unread, and a chunked body is counted as it streams in and cut
off with 413 at the limit.

Every response that passes through here gets the security headers; the one
response that cannot (a 500 from Starlette's outermost error middleware) is
built by `internal_error`, with the same headers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlhfkit.labeling.auth import authenticate
from rlhfkit.labeling.db import connect
from rlhfkit.labeling.labelers import Labeler

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# On a refusal with the body unread: the server stops reading it, instead of draining what the client still sends.
CLOSE_CONNECTION = {"Connection": "close"}

# Requests that carry no token by design: signing in sends it in the body (which the size limit still bounds).
OPEN_API_ROUTES = {("POST", "/api/session")}


@dataclass
class TokenBucket:
    """At most `burst` requests at once and `rate` per second on average: the classic token bucket.

    The bucket holds up to `burst` tokens and gains `rate` per second; a
    request spends one. A person clicking never notices; a runaway script is
    slowed to `rate` without locking anyone out.
    """

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Spend a token: 0.0 when there was one, else the seconds until there will be one (nothing spent)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def internal_error(request: Request, error: Exception) -> Response:
    """The 500 for an unexpected exception: no details out, the security headers on (the traceback goes to the log)."""
    return JSONResponse({"detail": "internal server error"}, status_code=500, headers=SECURITY_HEADERS)


def _refusal(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _find_labeler(db_path: Path, request: Request) -> Labeler:
    conn = connect(db_path)
    try:
        return authenticate(request, conn)
    finally:
        conn.close()


def _with_security_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).update(SECURITY_HEADERS)
        await send(message)

    return send_with_headers


def _limited(receive: Receive, max_body_bytes: int) -> Receive:
    """`receive` that counts body bytes and raises 413 past the limit (FastAPI passes an HTTPException through)."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body_bytes:
                raise HTTPException(
                    413, f"request body over the limit of {max_body_bytes} bytes", headers=CLOSE_CONNECTION
                )
        return message

    return receive_within_limit


class RequestGuard:
    """ASGI middleware: security headers on every response; token, rate and size checked before the body is read.

    A request that passes leaves its labeller in `request.state.labeler`.
    """

    def __init__(
        self, app: ASGIApp, db_path: Path, requests_per_second: float, burst: int, max_body_bytes: int
    ) -> None:
        self.app = app
        self.db_path = db_path
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.max_body_bytes = max_body_bytes
        self.buckets: dict[int, TokenBucket] = {}  # labeller id -> bucket; only authenticated labellers get one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        request = Request(scope)
        refused = await self._refusal(request)
        if refused is not None:
            if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
                refused.headers.update(CLOSE_CONNECTION)
            await refused(scope, receive, send)
            return
        await self.app(scope, _limited(receive, self.max_body_bytes), send)

    async def _refusal(self, request: Request) -> Response | None:
        """The response that refuses this request from its headers alone, or None to let it through."""
        if request.url.path.startswith("/api/") and (request.method, request.url.path) not in OPEN_API_ROUTES:
            try:
                labeler = await run_in_threadpool(_find_labeler, self.db_path, request)
            except HTTPException as error:
                return _refusal(error.status_code, error.detail, error.headers)
            request.state.labeler = labeler
            wait_s = self._bucket(labeler.id).take(time.monotonic())
            if wait_s > 0:
                return _refusal(
                    429,
                    f"too many requests: at most {self.requests_per_second:g} a second (bursts of {self.burst}) "
                    "per labeller",
                    {"Retry-After": str(math.ceil(wait_s))},
                )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return _refusal(413, f"request body of {declared} bytes is over the limit of {self.max_body_bytes}")
        return None

    def _bucket(self, labeler_id: int) -> TokenBucket:
        if labeler_id not in self.buckets:
            self.buckets[labeler_id] = TokenBucket(
                self.requests_per_second, self.burst, tokens=float(self.burst), updated=time.monotonic()
            )
        return self.buckets[labeler_id]
