"""The PPO iteration idle and beside one busy process, with the OpenMP settings before and after the CLI's.

    .venv/bin/python benchmarks/contention.py                       # 4 prompts x 16 new tokens, 2 rounds
    .venv/bin/python benchmarks/contention.py --batch-size 16 --max-new-tokens 32 --rounds 1

A laptop always has other work running. Before session 4, rlhfkit left OpenMP at its defaults: torch's
two threads spin while they wait for each other, and a spinning thread whose core is taken by another
process stalls the whole team. The CLI now sets `OMP_WAIT_POLICY=PASSIVE` before torch starts (unless
the user set one). Each cell runs `benchmarks/ppo_step.py`'s iteration in a fresh process (one warm-up
iteration, the median of the measured ones) with two torch threads:

    old   OMP_WAIT_POLICY unset (the OpenMP runtime's default)
    new   OMP_WAIT_POLICY=PASSIVE, as `rlhfkit` sets it

idle, and with one competing busy process (a Python loop pinned to CPU 0). The four cells alternate
for `--rounds` rounds; the figures are medians over rounds, and the ratio busy/idle per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rlhfkit.runtime.precision import cpu_flags

PPO_STEP = Path(__file__).with_name("ppo_step.py")
SETTINGS = {"old": {}, "new": {"OMP_WAIT_POLICY": "PASSIVE"}}


def busy_process() -> subprocess.Popen:
    """A pure-Python busy loop pinned to CPU 0: the 'one other busy process' of a working laptop."""
    loop = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", loop])


def iteration_seconds(setting: str, args: argparse.Namespace) -> float:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(SETTINGS[setting], OMP_NUM_THREADS="2")
    child = [sys.executable, str(PPO_STEP), "--child", "full", "--max-new-tokens", str(args.max_new_tokens)]
    child += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--reward", "sentiment"]
    out = subprocess.run(child, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["time/step_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="measured iterations after one warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for load in ("idle", "busy"):
            for setting in SETTINGS:
                competitor = busy_process() if load == "busy" else None
                try:
                    seconds.setdefault((setting, load), []).append(iteration_seconds(setting, args))
                    print(f"{setting} {load}: {seconds[(setting, load)][-1]:.1f} s", flush=True)  # cells can be slow
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
    print(f"CPU: {os.cpu_count()} cores, flags {cpu_flags()}")
    print(f"PPO iteration, {args.batch_size} prompts x {args.max_new_tokens} new tokens, full fine-tuning, 2 threads")
    print("setting  idle_s (each round)         busy_s (each round)         busy/idle (medians)")
    for setting in SETTINGS:
        idle, busy = seconds[(setting, "idle")], seconds[(setting, "busy")]
        ratio = statistics.median(busy) / statistics.median(idle)
        print(f"{setting:<8} {str([round(s, 1) for s in idle]):<27} {str([round(s, 1) for s in busy]):<27} {ratio:.2f}")


if __name__ == "__main__":
    main()
