"""`rlhfkit loop`: the online preference loop, round after round (the stages: `rlhfkit.loop.rounds`).

    rlhfkit loop --judge sentiment --set loop.rounds=3 --out runs/loop
    rlhfkit loop --server http://127.0.0.1:8000 --token ADMIN_TOKEN --out runs/loop

Labels come from a judge (any kind `rlhfkit label` knows, `ai` included) or from people on a
running `rlhfkit label serve`. Rerunning the same command on the same --out continues the loop.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlhfkit.config import REWARD_KINDS, add_config_arguments, refuse_old_keys
from rlhfkit.configs.loop import RENAMED_KEYS, LoopConfig
from rlhfkit.errors import UserError
from rlhfkit.loop.policy import ppo_config
from rlhfkit.loop.rounds import OnlineLoop, check_same_settings
from rlhfkit.loop.server import TOKEN_ENV, LabelServer, run_id
from rlhfkit.runtime import RunDirectory, run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LoopConfig, resume=False)
    parser.add_argument(
        "--judge",
        choices=(*REWARD_KINDS, "ai"),
        help="who labels: a reward source as the judge (also the gold judge: judge.kind=KIND), or ai (a judge model)",
    )
    parser.add_argument("--server", metavar="URL", help="people label on this `rlhfkit label serve` (labels.server)")
    parser.add_argument("--token", help=f"an admin's token on --server (default: ${TOKEN_ENV})")


def label_settings(args: argparse.Namespace) -> list[str]:
    """--judge and --server as the keys they stand for."""
    if args.server and args.judge == "ai":
        raise UserError("--judge ai and --server name two labellers; give one")
    settings = []
    if args.judge == "ai":
        settings.append("labels.source=ai")
    elif args.judge:
        settings += [f"judge.kind={args.judge}", "labels.source=judge"]
    if args.server:
        settings += ["labels.source=server", f"labels.server={args.server}"]
    return settings


def run(args: argparse.Namespace) -> int:
    args.set = [*label_settings(args), *args.set]
    refuse_old_keys(args.config, args.set, RENAMED_KEYS)
    config = run_config(LoopConfig, args)
    ppo_config(config, Path(), Path())  # the rounds' PPO run, checked (train.* against its batch) before any write
    out = RunDirectory.resolve(config.out, "loop", resume=False).path
    check_same_settings(config, out)  # a rerun continues only the loop it names
    server = None
    if config.labels.source == "server":
        server = LabelServer(config.labels.server, args.token or os.environ.get(TOKEN_ENV, ""), run_id(out))
        server.check()  # before any model loads
    try:
        summary = OnlineLoop(config, out, server).run()
    except KeyboardInterrupt:
        print(f"rlhfkit loop: interrupted; rerun the same command to continue from {out}", file=sys.stderr)
        return 130
    first, last = summary["gold_score_initial"], summary["rounds"][-1]
    stop = last.get("monitor_stop")
    if stop:
        rollback = (
            f"; the policy is rolled back to iteration {stop['rolled_back_to']}" if stop["rolled_back_to"] else ""
        )
        print(f"rlhfkit loop: the reward-hacking monitor ended the loop in round {last['round']} at PPO iteration "
              f"{stop['stopped_at']}: {stop['reason']}{rollback}")  # fmt: skip
    print(
        f"rlhfkit loop: {len(summary['rounds'])} round(s), {last['labels']} labels; gold score {first:+.3f} -> "
        f"{last['gold_score']:+.3f}, reward-model accuracy {last['reward_model_accuracy']:.1%}; "
        f"summary in {out / 'summary.json'}"
    )
    return 0
