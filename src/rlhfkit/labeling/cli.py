"""`rlhfkit label serve | add-labeler | export`: one module for the three commands.

`rlhfkit.cli` builds the parser with `prog="rlhfkit label <command>"` and
sets `args.command = "label <command>"`; the last word picks what to add and run.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import uvicorn

from rlhfkit.errors import UserError
from rlhfkit.labeling.app import ServeSettings, create_app
from rlhfkit.labeling.db import open_db
from rlhfkit.labeling.export import build_export, check_writable, write_jsonl
from rlhfkit.labeling.labelers import add_labeler, count_labelers
from rlhfkit.labeling.progress import judgement_rows
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


def _serve(args: argparse.Namespace) -> int:
    if args.judgements_per_task < 1:
        raise UserError(f"--judgements-per-task must be at least 1, got {args.judgements_per_task}")
    if args.lease_minutes <= 0:
        raise UserError(f"--lease-minutes must be positive, got {args.lease_minutes}")
    candidates: list[Candidate] = [
        c for path in args.tasks for c in read_candidates(path)
    ]  # all files valid before any is added
    conn = open_db(args.db)
    try:
        added = add_tasks(conn, candidates)
        total = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        labelers = count_labelers(conn)
    finally:
        conn.close()
    if total == 0:
        raise UserError(f"{args.db}: holds no tasks yet; load some with --tasks candidates.jsonl")
    if labelers == 0:
        print(
            f"warning: no labellers yet; create one with `rlhfkit label add-labeler NAME --db {args.db} --admin`",
            file=sys.stderr,
        )
    if args.host not in LOOPBACK_HOSTS:
        print(
            f"warning: listening on {args.host} over plain HTTP; tokens cross the network in clear unless a TLS proxy fronts it",
            file=sys.stderr,
        )
    try:
        listener = socket.create_server(
            (args.host, args.port), family=socket.AF_INET6 if ":" in args.host else socket.AF_INET
        )
    except OSError as error:
        raise UserError(
            f"cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port or --host"
        ) from None
    print(f"{total} task(s) in {args.db} ({added} new); {args.judgements_per_task} judgement(s) per task")
    print(f"open http://{args.host}:{args.port}/ and sign in with a labeller's token (Ctrl-C stops)", flush=True)
    app = create_app(args.db, ServeSettings(args.judgements_per_task, lease_seconds=60.0 * args.lease_minutes))
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[listener])
    return 0


def _add_labeler(args: argparse.Namespace) -> int:
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
            f"warning: {len(exported.rankings)} ranking(s) of tasks with more than two responses not written; pass --rankings-out FILE",
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
