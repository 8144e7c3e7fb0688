"""Christiano et al. (2017) on Pendulum-v1: how far do synthetic comparisons of segments take PPO?

What must hold (issue 16): with at most 1,000 comparisons from the synthetic labeller (the
segment with the higher true return wins), the true evaluation return gets at least 70 % of the
way from a random policy's to that of PPO trained on the true reward, with the same steps and
the same hyper-parameters. Three figures, each evaluated by `rlhfkit gym`'s own evaluation
(eval.episodes deterministic episodes from seed + 1,000,000, the environment's own rewards):

  random      uniformly random actions
  true PPO    `rlhfkit gym` on the environment's reward
  preference  `rlhfkit gym --set reward.kind=preferences`: the policy sees only the reward model's output

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gym_preferences.py                 # seed 0, 100k steps
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gym_preferences.py --seeds 0 1 --comparisons 500

The PPO settings are rl-baselines3-zoo's for Pendulum-v1 (4 envs x 1024 steps, gamma 0.9, GAE 0.95,
10 epochs of 64-row minibatches, lr 1e-3, clip 0.2, no entropy bonus) without its gSDE exploration,
without normalisation (the preference run's reward model reads raw observations), and with the
learning rate annealed linearly to 0 (rlhfkit's PPO default): at a constant 1e-3 the preference
run's policy reached -171 after 17 of 25 updates, then its standard deviation collapsed and two
updates of approx-KL 1.0 and 2.5 threw it back to -552 in evaluation (seed 0, 100k steps).

Measured on 2026-11-30 (2 shared vCPUs, one thread per run; returns are deterministic per seed):
102,400 steps, 1,000 comparisons each (`--seeds 0`, then `--seeds 1`):
seed 0: random -1147.0, true PPO -144.7, preference PPO -146.6: 100 % of the way (wall 283 s, 309 s);
seed 1: random -1121.9, true PPO -183.8, preference PPO -176.5: 101 % of the way (wall 255 s, 316 s).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rlhfkit.gym.config import new_run_config
from rlhfkit.gym.envs import EnvSpec, inspect_env
from rlhfkit.gym.evaluate import EVAL_SEED_OFFSET, evaluate
from rlhfkit.recipes.gym import GymTrainer

ENV_ID = "Pendulum-v1"
PPO_SETTINGS = [
    f"env.id={ENV_ID}",
    "env.num_envs=4",
    "ppo.rollout_steps=1024",
    "ppo.gamma=0.9",
    "ppo.lam=0.95",
    "ppo.clip_range=0.2",
    "ppo.entropy_coef=0.0",
    "train.ppo_epochs=10",
    "train.mini_batch_size=64",
    "optim.learning_rate=1e-3",
    "optim.schedule=linear",
    "env.normalize_observation=false",
    "env.normalize_reward=false",
]
EVAL_EPISODES = 10


class UniformRandomPolicy:
    """Acts uniformly at random in a Box action space, whatever it observes (the baseline of the fraction)."""

    def __init__(self, spec: EnvSpec):
        self.low = torch.as_tensor(spec.action_space.low.reshape(-1))
        self.high = torch.as_tensor(spec.action_space.high.reshape(-1))

    def act(self, observations: Tensor, deterministic: bool = False) -> tuple[Tensor, None, None]:
        noise = torch.rand(len(observations), len(self.low))
        return self.low + noise * (self.high - self.low), None, None


def random_return(seed: int) -> float:
    spec = inspect_env(ENV_ID)
    torch.manual_seed(seed)
    episodes = evaluate(UniformRandomPolicy(spec), spec, None, EVAL_EPISODES, seed + EVAL_SEED_OFFSET, True)  # type: ignore[arg-type]
    return float(np.mean([e.return_ for e in episodes]))


def train(settings: list[str], out: Path) -> dict:
    config = new_run_config(None, [*settings, f"out={out}"])
    return GymTrainer(config).train(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--comparisons", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra key for both runs")
    parser.add_argument("--out", default="runs/bench-gym-preferences")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        common = [*PPO_SETTINGS, f"train.total_timesteps={args.timesteps}", f"seed={seed}", *args.set]
        common.append(f"eval.episodes={EVAL_EPISODES}")
        random = random_return(seed)
        true_ppo = train(common, Path(args.out) / f"true-seed{seed}")
        preference = train(
            [*common, "reward.kind=preferences", f"reward.comparisons={args.comparisons}"],
            Path(args.out) / f"preferences-seed{seed}",
        )
        fraction = (preference["eval_return_mean"] - random) / (true_ppo["eval_return_mean"] - random)
        row = {
            "seed": seed,
            "env_steps": preference["env_steps"],
            "random": round(random, 1),
            "true_ppo": round(true_ppo["eval_return_mean"], 1),
            "preference_ppo": round(preference["eval_return_mean"], 1),
            "comparisons": preference["comparisons"],
            "fraction_of_the_way": round(fraction, 3),
            "wall_s": {"true_ppo": round(true_ppo["wall_s"]), "preference_ppo": round(preference["wall_s"])},
        }
        print(json.dumps(row), flush=True)
        rows.append(row)

    print("\n| seed | env steps | random | true-reward PPO | preference PPO | comparisons | fraction of the way |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['seed']} | {r['env_steps']:,} | {r['random']} | {r['true_ppo']} | {r['preference_ppo']} "
            f"| {r['comparisons']} | {r['fraction_of_the_way']:.0%} |"
        )
    met = all(r["fraction_of_the_way"] >= 0.7 and r["comparisons"] <= 1000 for r in rows)
    print(f"\nat least 70 % of the way with at most 1,000 comparisons: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
