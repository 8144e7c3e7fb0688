"""`rlhfkit label serve | add-labeler | export`: one module for the three commands.

`rlhfkit.cli` builds the parser with `prog="rlhfkit label <command>"` and
sets `args.command = "label <command>"`; the last word picks what to add and run.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from rlhfkit.errors import UserError
from rlhfkit.labeling.app import ServeSettings, create_app
from rlhfkit.labeling.db import open_db
from rlhfkit.labeling.export import build_export, check_writable, write_jsonl
from rlhfkit.labeling.labelers import add_labeler, check_labeler_name, count_labelers
from rlhfkit.labeling.progress import admin_progress, judgement_rows
from rlhfkit.labeling.tasks import Candidate, add_tasks, read_candidates

DEFAULT_DB = Path("labels.sqlite")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help=f"the labelling database, an SQLite file (default {DEFAULT_DB})"
    )


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="candidates file ({prompt, responses: [2..9]} records) to load as tasks; repeatable; "
        "records already in the database are not added again",
    )
    _add_db(parser)
    parser.add_argument(
        "--loop",
        action="store_true",
        help="start without tasks: `rlhfkit loop --server URL` pushes each round's pairs (and shows its progress)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--judgements-per-task",
        type=int,
        default=1,
        help="how many labellers judge each task (default 1; 2 or more give the agreement figures)",
    )
    parser.add_argument(
        "--lease-minutes",
        type=float,
        default=30.0,
        help="how long a task handed to a labeller stays reserved for them (default 30)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=10.0,
        metavar="PER_SECOND",
        help="requests a second each labeller may send on average; more get 429 with Retry-After (default 10)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=30,
        help="requests a labeller may send at once before --rate-limit applies (default 30)",
    )


def _add_labeler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the labeller's name, as shown on the admin page and in exports")
    _add_db(parser)
    parser.add_argument("--admin", action="store_true", help="may see progress and agreement, and export")


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    _add_db(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("comparisons.jsonl"),
        help="comparison records, for `rlhfkit rm` (default comparisons.jsonl)",
    )
    parser.add_argument("--rankings-out", type=Path, help="ranking records from tasks with more than two responses")
    parser.add_argument(
        "--keep-ties", action="store_true", help='export ties as comparisons with "label": 0.5 (default: left out)'
    )
    parser.add_argument(
        "--keep-both-bad",
        action="store_true",
        help='export "both bad" as comparisons with "label": 0.5 (default: left out)',
    )


def _check_serve_options(args: argparse.Namespace) -> None:
    if args.judgements_per_task < 1:
        raise UserError(f"--judgements-per-task must be at least 1, got {args.judgements_per_task}")
    if args.lease_minutes <= 0:
        raise UserError(f"--lease-minutes must be positive, got {args.lease_minutes}")
    if not args.rate_limit > 0:
        raise UserError(f"--rate-limit must be positive, got {args.rate_limit}")
    if args.burst < 1:
        raise UserError(f"--burst must be at least 1, got {args.burst}")


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); pick another --port or --host") from None


def _load_tasks(db: Path, candidates: list[Candidate], for_loop: bool) -> tuple[int, int, int]:
    """Add the candidates; returns (tasks in the database, tasks added, stored answers).

    No task at all is refused unless `for_loop`: then `rlhfkit loop --server` brings them.
    """
    conn = open_db(db)
    try:
        added = add_tasks(conn, candidates)
        total = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        answers = conn.execute("SELECT count(*) FROM judgements").fetchone()[0]
        if count_labelers(conn) == 0:
            print(
                f"warning: no labellers yet; create one with `rlhfkit label add-labeler NAME --db {db} --admin`",
                file=sys.stderr,
            )
    finally:
        conn.close()
    if total == 0 and not for_loop:
        raise UserError(
            f"{db}: holds no tasks yet; load some with --tasks candidates.jsonl (or --loop for `rlhfkit loop --server`)"
        )
    return total, added, answers


def _stopped(db: Path, answers_at_start: int, judgements_per_task: int, cut_short: bool) -> str:
    """What a stop did, from the database: the judgements are all there is to lose."""
    conn = open_db(db, create=False)
    try:
        progress = admin_progress(conn, judgements_per_task)
    finally:
        conn.close()
    answers = progress["judgements"] + progress["skips"]
    how = (
        "at once on a second Ctrl-C (a request in flight may have been cut off)"
        if cut_short
        else "after finishing the requests in flight (none pending)"
    )
    return (
        f"stopped {how}; {progress['judgements']} judgement(s) and {progress['skips']} skip(s) stored in {db} "
        f"({answers - answers_at_start} this session); "
        f"{progress['in_progress']} task(s) shown but unanswered stay reserved for their labellers"
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM (a service manager's stop) end like Ctrl-C: uvicorn re-raises it after its graceful shutdown."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace) -> int:
    _check_serve_options(args)
    candidates: list[Candidate] = [
        c for path in args.tasks for c in read_candidates(path)
    ]  # all valid before any is added
    if not candidates and not args.db.is_file() and not args.loop:
        raise UserError(f"{args.db}: no such database; create it with --tasks candidates.jsonl")
    if args.host not in LOOPBACK_HOSTS:
        print(
            f"warning: listening on {args.host} over plain HTTP; "
            "tokens cross the network in clear unless a TLS proxy fronts it",
            file=sys.stderr,
        )
    with _listen(args.host, args.port) as listener:  # before the database: a busy port leaves nothing written
        total, added, answers = _load_tasks(args.db, candidates, args.loop)
        print(f"{total} task(s) in {args.db} ({added} new); {args.judgements_per_task} judgement(s) per task")
        print(f"open http://{args.host}:{args.port}/ and sign in with a labeller's token (Ctrl-C stops)", flush=True)
        settings = ServeSettings(
            args.judgements_per_task,
            lease_seconds=60.0 * args.lease_minutes,
            requests_per_second=args.rate_limit,
            burst=args.burst,
        )
        server = uvicorn.Server(uvicorn.Config(create_app(args.db, settings), log_level="info"))
        interrupted = False
        with _sigterm_as_interrupt():
            try:
                server.run(sockets=[listener])
            except KeyboardInterrupt:
                interrupted = True
    print(
        f"rlhfkit label serve: {_stopped(args.db, answers, args.judgements_per_task, server.force_exit)}",
        file=sys.stderr,
    )
    return 130 if interrupted else 0


def _add_labeler(args: argparse.Namespace) -> int:
    check_labeler_name(args.name)  # before the database file is created
    conn = open_db(args.db)
    try:
        token = add_labeler(conn, args.name, args.admin)
    finally:
        conn.close()
    print(f"created {'admin' if args.admin else 'labeller'} {args.name!r} in {args.db}")
    print("access token (shown only now; the database keeps its hash):")
    print(token)
    return 0


def _export(args: argparse.Namespace) -> int:
    outputs = [args.out] + ([args.rankings_out] if args.rankings_out else [])
    for path in outputs:
        check_writable(path)
    conn = open_db(args.db, create=False)
    try:
        rows = judgement_rows(conn)
    finally:
        conn.close()
    exported = build_export(rows, keep_ties=args.keep_ties, keep_both_bad=args.keep_both_bad)
    write_jsonl(args.out, exported.comparisons)
    summary = f"wrote {len(exported.comparisons)} comparison(s) to {args.out}"
    if args.rankings_out:
        write_jsonl(args.rankings_out, exported.rankings)
        summary += f" and {len(exported.rankings)} ranking(s) to {args.rankings_out}"
    elif exported.rankings:
        print(
            f"warning: {len(exported.rankings)} ranking(s) of tasks with more than two responses not written; "
            "pass --rankings-out FILE",
            file=sys.stderr,
        )
    if exported.left_out:
        summary += "; left out: " + ", ".join(
            f"{count} {reason}" for reason, count in sorted(exported.left_out.items())
        )
    print(summary)
    return 0


_ADD_ARGUMENTS = {"serve": _add_serve_arguments, "add-labeler": _add_labeler_arguments, "export": _add_export_arguments}
_RUN = {"serve": _serve, "add-labeler": _add_labeler, "export": _export}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _ADD_ARGUMENTS[parser.prog.split()[-1]](parser)


def run(args: argparse.Namespace) -> int:
    return _RUN[args.command.split()[-1]](args)
