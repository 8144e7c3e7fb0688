"""The FastAPI app: two pages, their static files, and the JSON API they (and scripts) use.

Pages: `/` (labelling) and `/admin`; without a valid token either answers 401
with the sign-in page. API: see docs/labeling.md. Model output is untrusted:
the pages put it in the DOM with `textContent` only, and every response
carries a Content-Security-Policy that allows scripts from this origin's
static files alone (no inline script, no eval), so even a bug that reached
`innerHTML` could not run a response's script. `guard.RequestGuard` sees every
request first: security headers, the token, the labeller's rate and the body
size, all checked before a byte of the body is read.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.labeling.agreement import agreement
from rlhfkit.labeling.auth import COOKIE_NAME, authenticate, credentials
from rlhfkit.labeling.db import connect, open_db
from rlhfkit.labeling.decisions import MAX_COMMENT_LENGTH, InvalidJudgement
from rlhfkit.labeling.export import build_export, jsonl_text
from rlhfkit.labeling.guard import RequestGuard, internal_error
from rlhfkit.labeling.labelers import Labeler, csrf_token, find_labeler
from rlhfkit.labeling.loop_rounds import loop_routes
from rlhfkit.labeling.progress import admin_progress, judgement_rows, labeler_progress
from rlhfkit.labeling.queue import AlreadyJudged, NotShown, TaskNotFound, next_task, record_judgement

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
COOKIE_MAX_AGE_S = 7 * 24 * 3600

# Ids are SQLite integer keys: 64-bit signed. A bigger one must be refused as input, not overflow inside SQLite (a 500);
# strict, so that `true` or "7" is not taken for an id.
SQLITE_MAX_INT = 2**63 - 1
SqliteId = Annotated[int, Field(strict=True, ge=-SQLITE_MAX_INT - 1, le=SQLITE_MAX_INT)]


@dataclass(frozen=True)
class ServeSettings:
    judgements_per_task: int = 1
    lease_seconds: float = 1800.0
    requests_per_second: float = 10.0  # per labeller, on average: far above a person's pace, far below a loop's
    burst: int = 30  # requests a labeller may send at once before the rate applies
    max_body_bytes: int = 256 * 1024  # a judgement with the longest comment is under 30 KB


class SignIn(BaseModel):
    token: str


class JudgementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: SqliteId
    choice: str | None = None
    ranking: list[int] | None = None
    comment: str = Field(default="", max_length=MAX_COMMENT_LENGTH)


def _db(request: Request) -> Iterator[sqlite3.Connection]:
    conn = connect(request.app.state.db_path)
    try:
        yield conn
    finally:
        conn.close()


DB = Annotated[sqlite3.Connection, Depends(_db)]


def _labeler(request: Request) -> Labeler:
    labeler: Labeler = request.state.labeler  # RequestGuard authenticated every /api/ request before its body was read
    return labeler


def _admin(me: Annotated[Labeler, Depends(_labeler)]) -> Labeler:
    if not me.is_admin:
        raise HTTPException(403, "admins only")
    return me


Me = Annotated[Labeler, Depends(_labeler)]
Admin = Annotated[Labeler, Depends(_admin)]


def _html(name: str, status_code: int) -> Response:
    return Response((STATIC / name).read_bytes(), status_code=status_code, media_type="text/html; charset=utf-8")


def create_app(db_path: Path, settings: ServeSettings) -> FastAPI:
    """The app over an existing (or new) labelling database."""
    open_db(db_path).close()  # create the schema once, and fail early on a wrong file
    app = FastAPI(
        title="rlhfkit label",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers={Exception: internal_error},
    )
    app.add_middleware(
        RequestGuard,
        db_path=db_path,
        requests_per_second=settings.requests_per_second,
        burst=settings.burst,
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.db_path = db_path
    app.include_router(_page_routes())
    app.include_router(_session_routes(settings))
    app.include_router(_labelling_routes(settings, random.Random()))
    app.include_router(_admin_routes(settings))
    app.include_router(loop_routes(DB, Admin))  # the online loop's rounds (rlhfkit loop --server)
    return app


def _page(request: Request, conn: sqlite3.Connection, name: str, admin_only: bool) -> Response:
    """A page for a signed-in labeller; the sign-in page (401) without a valid token, 403 for a non-admin."""
    try:
        me = authenticate(request, conn)
    except HTTPException:
        return _html("signin.html", 401)
    if admin_only and not me.is_admin:
        return _html("forbidden.html", 403)
    return _html(name, 200)


def _page_routes() -> APIRouter:
    """The two pages and their scripts and styles (read once, served from memory)."""
    router = APIRouter()
    assets = {
        path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
        for path in STATIC.iterdir()
        if path.suffix in MEDIA_TYPES
    }

    @router.get("/")
    def label_page(request: Request, conn: DB) -> Response:
        return _page(request, conn, "label.html", admin_only=False)

    @router.get("/admin")
    def admin_page(request: Request, conn: DB) -> Response:
        return _page(request, conn, "admin.html", admin_only=True)

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such file")
        content, media_type = assets[name]
        return Response(content, media_type=media_type)

    return router


def _session_routes(settings: ServeSettings) -> APIRouter:
    """Signing in and out (the token in an HttpOnly cookie), and who the caller is."""
    router = APIRouter(prefix="/api")

    @router.post("/session", status_code=204)
    def sign_in(body: SignIn, request: Request, conn: DB) -> Response:
        if find_labeler(conn, body.token) is None:
            raise HTTPException(401, "unknown token")
        response = Response(status_code=204)
        response.set_cookie(
            COOKIE_NAME,
            body.token,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.delete("/session", status_code=204)
    def sign_out(me: Me) -> Response:
        response = Response(status_code=204)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/me")
    def whoami(me: Me, request: Request, conn: DB) -> dict[str, Any]:
        found = credentials(request)
        assert found is not None, "authenticated requests carry a token"
        return {
            "name": me.name,
            "admin": me.is_admin,
            "csrf_token": csrf_token(found.token),
            **labeler_progress(conn, me.id, settings.judgements_per_task),
        }

    return router


def _labelling_routes(settings: ServeSettings, rng: random.Random) -> APIRouter:
    """A labeller's next task, and their judgement of it."""
    router = APIRouter(prefix="/api")

    @router.get("/tasks/next", response_model=None)
    def get_next_task(me: Me, conn: DB) -> Response | dict[str, Any]:
        task = next_task(conn, me.id, settings.judgements_per_task, settings.lease_seconds, rng)
        if task is None:
            return Response(status_code=204)
        return {"task_id": task.task_id, "prompt": task.prompt, "responses": task.responses}

    @router.post("/judgements", status_code=201)
    def post_judgement(body: JudgementIn, me: Me, conn: DB) -> dict[str, int]:
        try:
            judgement_id = record_judgement(conn, me.id, body.task_id, body.choice, body.ranking, body.comment)
        except TaskNotFound as error:
            raise HTTPException(404, str(error)) from None
        except (NotShown, AlreadyJudged) as error:
            raise HTTPException(409, str(error)) from None
        except InvalidJudgement as error:
            raise HTTPException(422, str(error)) from None
        return {"id": judgement_id}

    return router


def _admin_routes(settings: ServeSettings) -> APIRouter:
    """Progress, agreement between labellers, and the exports: admins only."""
    router = APIRouter(prefix="/api/admin")

    @router.get("/progress")
    def progress(me: Admin, conn: DB) -> dict[str, Any]:
        return admin_progress(conn, settings.judgements_per_task)

    @router.get("/agreement")
    def labeler_agreement(me: Admin, conn: DB) -> dict[str, Any]:
        return agreement(judgement_rows(conn))

    @router.get("/export/{name}")
    def export(name: str, me: Admin, conn: DB, keep_ties: bool = False, keep_both_bad: bool = False) -> Response:
        if name not in ("comparisons.jsonl", "rankings.jsonl"):
            raise HTTPException(404, "exports are comparisons.jsonl and rankings.jsonl")
        exported = build_export(judgement_rows(conn), keep_ties, keep_both_bad)
        records = exported.comparisons if name == "comparisons.jsonl" else exported.rankings
        return Response(
            jsonl_text(records),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
