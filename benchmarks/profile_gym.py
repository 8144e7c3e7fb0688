"""Where the time of `rlhfkit gym` (PPO on CartPole-v1, 100k steps, the defaults) goes: cProfile's cumulative
seconds of the rollout, the policy's forward pass and sampling, the environments' step, the PPO update and
what follows training (evaluation, plots).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_gym.py /tmp/profile-gym
"""

import cProfile
import pstats
import shutil
import sys

import torch

from rlhfkit.gym.config import new_run_config
from rlhfkit.recipes.gym import GymTrainer

torch.set_num_threads(1)
out = sys.argv[1]
shutil.rmtree(out, ignore_errors=True)
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000  # a second argument: another budget (a smoke check)
cfg = new_run_config(None, [f"train.total_timesteps={steps}", f"out={out}", "train.checkpoint_every=1000"])
profile = cProfile.Profile()
profile.runcall(GymTrainer(cfg).train, out)
stats = pstats.Stats(profile).stats
wanted = {  # (file, function): what it is
    ("gym.py", "train_step"): "whole update (rollout + update)",
    ("rollout.py", "collect"): "rollout",
    ("policy.py", "act"): "policy forward + sampling (in the rollout)",
    ("sync_vector_env.py", "step"): "environment stepping (in the rollout)",
    ("updates.py", "ppo_update"): "PPO update (epochs x minibatches)",
    ("run.py", "finish"): "after training: evaluation, final/, plots",
    ("evaluate.py", "evaluate"): "evaluation episodes",
    ("tracking.py", "plot_metrics"): "plots",
}
total = max(v[3] for v in stats.values())
for (filename, _, name), (_, _, _, cumulative, _) in sorted(stats.items(), key=lambda kv: -kv[1][3]):
    what = wanted.get((filename.split("/")[-1], name))
    if what:
        print(f"{name:<14} {cumulative:7.2f} s  {cumulative / total:6.1%}  {what}")
print(f"total {total:.2f} s (under cProfile, which inflates many small calls)")
