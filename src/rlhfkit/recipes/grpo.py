"""`rlhfkit grpo` and `rlhfkit rloo`: `rlhfkit ppo` with the defaults of GRPO and of RLOO.

Neither is a trainer of its own: both run `PPOTrainer` (the same rollout, scoring and clipped
update) with another advantage estimator and no value model. Only the defaults differ, so every
`ppo` key works here and `--set` overrides any of them:

    grpo  algorithm.advantage=grpo  group_size=4  kl_in=loss  kl_estimator=k3   (Shao et al. 2024)
    rloo  algorithm.advantage=rloo  group_size=4  kl_in=reward                  (Ahmadian et al. 2024)

and both train.batch_size=4 prompts, so an iteration samples the 16 responses of a `ppo` iteration.
config.yaml records the resolved configuration, so `--resume` continues with it as `ppo` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhfkit.config import add_config_arguments, load_config
from rlhfkit.configs.ppo import COMMAND_DEFAULTS, PPOConfig
from rlhfkit.recipes.ppo import train_command
from rlhfkit.runtime import run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the CLI names each command's parser "rlhfkit <command>": --help lists the keys with this command's defaults
    command = parser.prog.rsplit(" ", 1)[-1]
    add_config_arguments(parser, lambda: load_config(PPOConfig, base=COMMAND_DEFAULTS[command]))


def run(args: argparse.Namespace) -> Path:
    # with --resume the run's config.yaml is the base: it holds the command's defaults already
    config = run_config(PPOConfig, args, defaults=COMMAND_DEFAULTS[args.command])
    return train_command(config, args.command, args.resume)
