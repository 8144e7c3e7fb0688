"""The road to PPO, measured: REINFORCE, A2C, TRPO and PPO in rlhfkit beside SB3's A2C and PPO and sb3-contrib's TRPO.

Environments: CartPole-v1, Acrobot-v1 and Pendulum-v1 (`ENVIRONMENTS`: budget, solved threshold,
extra settings), 3 seeds each. Every rlhfkit entry is a full `rlhfkit gym --set algorithm=...`
run (checkpoints, TensorBoard, evaluation) with that algorithm's own defaults for the action
space; every SB3 entry gets the same resolved settings, translated by `gym_vs_sb3.train_sb3`
(A2C with Adam, as rlhfkit's, not SB3's default RMSprop). Entries of one seed run in alternating
order (rlhfkit, SB3, rlhfkit, ...; reversed on odd seeds), so that a noisy machine slows both
libraries alike. One torch thread for both.

Figures per run:
  - eval return: 10 deterministic episodes of the final policy, the first reset seeded
    seed + 1,000,000, the same loop for both libraries;
  - steps to solve: the environment steps at which the mean return of the last 10 finished
    training episodes first reached the threshold (rlhfkit logs each update's mean return and
    episode count, so its episodes are counted at the end of their update: up to one batch late);
  - wall seconds of the whole run (training, checkpoints, evaluation).
One learning-curve plot per environment: that mean of the last 10 training episodes against
environment steps, averaged over seeds, one line per entry.

    .venv/bin/python benchmarks/gym_family.py                                       # everything: hours
    .venv/bin/python benchmarks/gym_family.py --envs CartPole-v1 --seeds 0 1 2
    .venv/bin/python benchmarks/gym_family.py --envs CartPole-v1 --seeds 0 --timesteps 2048   # smoke check
    .venv/bin/python benchmarks/gym_family.py --merge runs/a runs/b --out runs/all   # one report of several runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gym_vs_sb3 import SB3_ARGUMENTS, sb3_class, train_sb3
from rlhfkit.errors import UserError
from rlhfkit.gym.config import ALGORITHMS, GymConfig, new_run_config
from rlhfkit.recipes.gym import GymTrainer
from rlhfkit.tracking import new_figure, read_jsonl

# env id -> (environment steps, solved threshold, settings for every entry)
ENVIRONMENTS: dict[str, tuple[int, float, list[str]]] = {
    "CartPole-v1": (100_000, 475.0, []),  # gymnasium's reward_threshold
    "Acrobot-v1": (100_000, -100.0, []),  # gymnasium's reward_threshold
    # no threshold registered; -200 is the usual "swung up and held". gamma 0.9 and the 100k budget are
    # rl-baselines3-zoo's for PPO on Pendulum (its other settings are PPO-only keys, refused for the others).
    "Pendulum-v1": (100_000, -200.0, ["ppo.gamma=0.9"]),
}
WINDOW = 10  # training episodes in the moving mean


def entries(seed: int) -> list[tuple[str, str]]:
    """(library, algorithm) in this seed's order: rlhfkit and SB3 alternate, reversed on odd seeds."""
    rlhfkit = [("rlhfkit", algorithm) for algorithm in ALGORITHMS]
    sb3 = [("sb3", algorithm) for algorithm in ALGORITHMS if algorithm in SB3_ARGUMENTS and _installed(algorithm)]
    order = []
    for i in range(max(len(rlhfkit), len(sb3))):
        order += rlhfkit[i : i + 1] + sb3[i : i + 1]
    return order if seed % 2 == 0 else order[::-1]


def _installed(algorithm: str) -> bool:
    try:
        sb3_class(algorithm)
    except UserError as error:
        print(f"skipping SB3 {algorithm}: {error}")
        return False
    return True


def moving_mean(episodes: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(env steps, mean return of the last WINDOW episodes) after each episode, in order of steps."""
    returns = [r for _, r in episodes]
    return [(steps, float(np.mean(returns[max(0, i + 1 - WINDOW) : i + 1]))) for i, (steps, _) in enumerate(episodes)]


def steps_to_solve(curve: list[tuple[int, float]], threshold: float) -> int | None:
    return next((steps for steps, mean in curve if mean >= threshold), None)


def rlhfkit_episodes(out: Path) -> list[tuple[int, float]]:
    """Training episodes from metrics.jsonl: each update's mean return, once per episode that ended in it."""
    episodes = []
    for record in read_jsonl(out / "metrics.jsonl"):
        if record.get("charts/episodic_return") is not None:
            episodes += [(record["charts/env_steps"], record["charts/episodic_return"])] * record["charts/episodes"]
    return episodes


def run_entry(library: str, cfg: GymConfig, out: Path) -> dict:
    """Train one entry -> its figures and training curve."""
    if library == "rlhfkit":
        started = time.perf_counter()
        summary = GymTrainer(cfg).train(out)
        wall, returns, episodes = time.perf_counter() - started, None, rlhfkit_episodes(out)
        eval_mean, eval_std = summary["eval_return_mean"], summary["eval_return_std"]
    else:
        wall, returns, episodes = train_sb3(cfg)
        eval_mean, eval_std = float(np.mean(returns)), float(np.std(returns))
    return {"eval_return": eval_mean, "eval_return_std": eval_std, "wall_s": round(wall, 1), "episodes": episodes}


def run_environment(env_id: str, seeds: list[int], timesteps: int | None, extra: list[str], out: Path) -> list[dict]:
    budget, threshold, settings = ENVIRONMENTS[env_id]
    rows = []
    for seed in seeds:
        for library, algorithm in entries(seed):
            run_out = out / env_id / f"{library}-{algorithm}-seed{seed}"
            overrides = [f"algorithm={algorithm}", f"env.id={env_id}", f"seed={seed}", f"out={run_out}"]
            overrides += [f"train.total_timesteps={timesteps or budget}", *settings, *extra]
            cfg = new_run_config(None, overrides)
            result = run_entry(library, cfg, run_out)
            curve = moving_mean(result.pop("episodes"))
            row = {"env_id": env_id, "library": library, "algorithm": algorithm, "seed": seed, **result}
            row |= {"env_steps": cfg.num_updates * cfg.batch_size, "steps_to_solve": steps_to_solve(curve, threshold)}
            rows.append({**row, "curve": curve})
            print(json.dumps(row), flush=True)
    return rows


def plot_environment(env_id: str, rows: list[dict], out: Path) -> Path:
    """The seeds' mean of the moving-mean training return against env steps: rlhfkit solid, SB3 dashed."""
    figure, axes = new_figure(figsize=(7.5, 4.5))
    grid = np.linspace(0, max(r["env_steps"] for r in rows), 200)
    for library, algorithm in sorted({(r["library"], r["algorithm"]) for r in rows}):
        curves = [r["curve"] for r in rows if (r["library"], r["algorithm"]) == (library, algorithm) and r["curve"]]
        if not curves:
            continue
        steps = grid[grid >= max(c[0][0] for c in curves)]  # from where every seed has an episode
        mean = np.mean([np.interp(steps, [s for s, _ in c], [m for _, m in c]) for c in curves], axis=0)
        style = {"color": f"C{ALGORITHMS.index(algorithm)}", "ls": "-" if library == "rlhfkit" else "--"}
        axes.plot(steps, mean, label=f"{library} {algorithm}", **style)  # one colour per algorithm
    axes.axhline(ENVIRONMENTS[env_id][1], color="grey", lw=0.8, ls=":")
    axes.set_xlabel("environment steps")
    axes.set_ylabel(f"training return (mean of last {WINDOW} episodes)")
    axes.set_title(f"{env_id}: the road to PPO (mean over {len({r['seed'] for r in rows})} seeds)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = out / f"{env_id}-learning-curves.png"
    figure.savefig(path, dpi=100)
    return path


def print_table(env_id: str, rows: list[dict]) -> None:
    threshold = ENVIRONMENTS[env_id][1]
    print(f"\n{env_id} ({rows[0]['env_steps']:,} steps; solved: {threshold})")
    print("| library | algorithm | eval return per seed | solved in eval | steps to solve per seed | wall s (mean) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for library, algorithm in dict.fromkeys((r["library"], r["algorithm"]) for r in rows):
        mine = [r for r in rows if (r["library"], r["algorithm"]) == (library, algorithm)]
        returns = " / ".join(f"{r['eval_return']:.0f}" for r in mine)
        solved = sum(r["eval_return"] >= threshold for r in mine)
        steps = " / ".join(f"{r['steps_to_solve']:,}" if r["steps_to_solve"] else "-" for r in mine)
        wall = np.mean([r["wall_s"] for r in mine])
        print(f"| {library} | {algorithm} | {returns} | {solved} of {len(mine)} | {steps} | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=list(ENVIRONMENTS), default=list(ENVIRONMENTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, help="one budget for every environment (default: ENVIRONMENTS')")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override for every run"
    )
    parser.add_argument("--out", default="runs/bench-gym-family")
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="DIR", help="train nothing: one table and plot per environment from "
        "the results.json of these earlier --out directories (e.g. one process per seed)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        results = [row for directory in args.merge for row in json.loads((directory / "results.json").read_text())]
    else:
        results = [
            row for env_id in args.envs for row in run_environment(env_id, args.seeds, args.timesteps, args.set, out)
        ]
    for env_id in dict.fromkeys(row["env_id"] for row in results):
        rows = sorted((r for r in results if r["env_id"] == env_id), key=lambda r: r["seed"])
        print_table(env_id, rows)
        print(f"plot: {plot_environment(env_id, rows, out)}")
    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
