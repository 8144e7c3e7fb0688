"""One training step of the demo's reward model (stage 3) reading each ranking's prompt once, against whole rows.

    .venv/bin/python benchmarks/reward_model_step.py --demo-out DIR   # DIR: a finished `rlhfkit demo --out DIR`

One process: the demo's reward-model stage config on DIR's rankings (the demo's defaults: a LoRA reward
model on the embedded model, rankings of each prompt's answers), then training steps with
`models.shared_prompts` on and off, alternated; medians after one warm-up step each. Run it on a
quiet machine.
"""

import argparse
import statistics
import time
from pathlib import Path

from rlhfkit.models import heads
from rlhfkit.recipes.demo import DemoConfig, stage_configs
from rlhfkit.recipes.reward import RewardModelTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    config = stage_configs(DemoConfig(), args.demo_out)["3-rm"]
    trainer = RewardModelTrainer(config)
    shared = heads.shared_prompt_response_states
    times: dict[str, list[float]] = {"shared": [], "whole": []}
    for round_index in range(args.rounds):
        for side in ("shared", "whole") if round_index % 2 == 0 else ("whole", "shared"):
            heads.shared_prompt_response_states = shared if side == "shared" else (lambda *_: None)
            started = time.perf_counter()
            trainer.train_step()
            times[side].append(time.perf_counter() - started)
    for side, seconds in times.items():
        print(f"{side}: median {statistics.median(seconds[1:]):.3f} s  (all: {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
