"""`rlhfkit <command> ...`: find the command's module, let it parse, run it.

Only the chosen command's module is imported, so `rlhfkit --help` and
`rlhfkit label export` do not pay for importing torch and transformers.
Each command module exposes `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rlhfkit.errors import UserError

# command name -> (module, one-line description). A two-word key is a sub-command.
COMMANDS: dict[str, tuple[str, str]] = {
    "ppo": ("rlhfkit.recipes.ppo", "PPO against a reward source, with a KL leash to a frozen reference"),
    "sft": ("rlhfkit.recipes.sft", "supervised fine-tuning on demonstrations"),
    "rm": ("rlhfkit.recipes.reward", "train a reward model on comparisons, rankings or choices"),
    "generate": ("rlhfkit.recipes.generate", "sample K responses per prompt into candidates.jsonl"),
    "label": ("rlhfkit.recipes.label", "turn candidates into preference records with a judge"),
    "label serve": ("rlhfkit.labeling.cli", "serve the web page where people compare responses"),
    "label add-labeler": ("rlhfkit.labeling.cli", "create a labeller and print its access token"),
    "label export": ("rlhfkit.labeling.cli", "export human judgements as comparison or ranking records"),
    "dpo": ("rlhfkit.recipes.dpo", "direct preference optimisation (DPO, IPO, conservative DPO)"),
    "constitution": ("rlhfkit.recipes.constitution", "Constitutional AI: critique and revise, write demonstrations"),
    "gym": ("rlhfkit.recipes.gym", "classic PPO on a Gymnasium environment"),
    "demo": ("rlhfkit.recipes.demo", "the whole RLHF pipeline on the embedded model, with a report"),
}


def _usage() -> str:
    lines = ["usage: rlhfkit <command> [options]   (rlhfkit <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<18} {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    return argv[0], argv[1:]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = _split_command(argv)
    if command not in COMMANDS:
        print(f"rlhfkit: error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, description = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"rlhfkit {command}", description=description)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.command = command
    try:
        return int(module.run(args) or 0)
    except UserError as error:
        print(f"rlhfkit {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlhfkit {command}: interrupted; the last checkpoint is intact, rerun with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
