"""`rlhfkit <command> ...`: find the command's module, let it parse, run it.

Only the chosen command's module is imported, so `rlhfkit --help` and
`rlhfkit label export` do not pay for importing torch and transformers.
Each command module exposes `add_arguments(parser)` and `run(args) -> int`.

This is also the one error boundary. Every expected failure — a UserError, or
a path the system refuses (missing, not permitted, read-only, a file where a
directory belongs) — is one line on stderr and exit status 2. Anything else is
a bug: a one-line summary and exit status 1, with the traceback under the
global flag `--debug` (before or after the command).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import NoReturn

from rlhfkit.errors import USER_PATH_ERRNOS, UserError, describe_os_error, one_line, summarize

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
    lines += ["", "global option:", f"  {'--debug':<18} print the traceback of an internal error"]
    return "\n".join(lines)


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    return argv[0], argv[1:]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported on one line like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = _split_command(argv)
    if command not in COMMANDS:
        names = ", ".join(dict.fromkeys(name.split()[0] for name in COMMANDS))
        print(f"rlhfkit: error: unknown command {command!r}; the commands are {names}", file=sys.stderr)
        return 2
    module_name, description = COMMANDS[command]
    return _run(command, module_name, description, rest, debug)


def _run(command: str, module_name: str, description: str, rest: list[str], debug: bool) -> int:
    """Parse and run one command inside the error boundary (see the module docstring)."""
    try:
        module = importlib.import_module(module_name)
        parser = _Parser(prog=f"rlhfkit {command}", description=description)
        module.add_arguments(parser)
        args = parser.parse_args(rest)  # exits (SystemExit) after --help or a one-line usage error
        args.command = command
        return int(module.run(args) or 0)
    except UserError as error:
        return _refuse(command, one_line(str(error)), debug)
    except OSError as error:
        if error.filename is None or error.errno not in USER_PATH_ERRNOS:
            return _internal_error(command, error, debug)
        return _refuse(command, describe_os_error(error), debug)
    except KeyboardInterrupt:
        print(f"rlhfkit {command}: interrupted; the last checkpoint is intact, rerun with --resume", file=sys.stderr)
        return 130
    except Exception as error:
        return _internal_error(command, error, debug)


def _refuse(command: str, message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"rlhfkit {command}: error: {message}", file=sys.stderr)
    return 2


def _internal_error(command: str, error: Exception, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    hint = "" if debug else " (rerun with --debug for the traceback)"
    print(f"rlhfkit {command}: internal error: {summarize(error)}{hint}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
