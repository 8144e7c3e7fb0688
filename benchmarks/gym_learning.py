"""Does `rlhfkit gym` learn? CartPole-v1 for 3 seeds at 100k steps, Pendulum-v1 at 200k steps.

What must hold (issue 5): CartPole reaches the 500 cap in evaluation for at
least 2 of 3 seeds; Pendulum's evaluation mean return is better than -400.
Each run is a full `rlhfkit gym` run (checkpoints, TensorBoard, the final
evaluation of 10 deterministic episodes) written under --out, with the
defaults for its action space plus `SETTINGS` below.

    .venv/bin/python benchmarks/gym_learning.py                      # both, seeds 0 1 2
    .venv/bin/python benchmarks/gym_learning.py --only CartPole-v1 --seeds 0 1 2
    .venv/bin/python benchmarks/gym_learning.py --set algorithm=trpo   # another algorithm, same targets

(benchmarks/gym_family.py runs all four algorithms beside Stable-Baselines3's.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlhfkit.gym.config import new_run_config
from rlhfkit.recipes.gym import GymTrainer

BUDGETS = {"CartPole-v1": 100_000, "Pendulum-v1": 200_000}
# Pendulum's reward is dense and its swing-up short, so the tuned PPO settings of
# rl-baselines3-zoo use gamma 0.9 for it; everything else is the Box defaults.
SETTINGS = {"CartPole-v1": [], "Pendulum-v1": ["ppo.gamma=0.9"]}
TARGETS = {
    "CartPole-v1": ("reaches the 500 cap", lambda r: r >= 500.0),
    "Pendulum-v1": ("better than -400", lambda r: r > -400.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(BUDGETS), action="append", help="run only this environment (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override for every run"
    )
    parser.add_argument("--out", default="runs/bench-gym-learning")
    args = parser.parse_args()

    rows = []
    for env_id in args.only or list(BUDGETS):
        for seed in args.seeds:
            out = Path(args.out) / f"{env_id}-seed{seed}"
            overrides = [
                f"env.id={env_id}",
                f"train.total_timesteps={BUDGETS[env_id]}",
                f"seed={seed}",
                f"out={out}",
                *SETTINGS[env_id],
                *args.set,
            ]
            cfg = new_run_config(None, overrides)
            started = time.perf_counter()
            summary = GymTrainer(cfg).train(out)
            wall = time.perf_counter() - started
            target, reached = TARGETS[env_id]
            settings = " ".join([*SETTINGS[env_id], *args.set]) or "defaults"
            rows.append(
                {
                    **summary,
                    "seed": seed,
                    "settings": settings,
                    "wall_seconds": round(wall, 1),
                    "target": target,
                    "reached": reached(summary["eval_return_mean"]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    print("\n| env | settings | seed | env steps | eval return (mean ± std) | target met | wall s | train steps/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['env_id']} | {r['settings']} | {r['seed']} | {r['env_steps']:,} | "
            f"{r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} | "
            f"{'yes' if r['reached'] else 'no'} ({r['target']}) | {r['wall_seconds']:.0f} | "
            f"{r['steps_per_second']:.0f} |"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
