"""`rlhfkit <command> ...`: find the command's module, let it parse, run it.

Only the chosen command's module is imported, so `rlhfkit --help` and
`rlhfkit label export` do not pay for importing torch and transformers.
Each command module exposes `add_arguments(parser)` and `run(args)`, which returns its exit code, or
the output directory of a run that succeeded (exit 0; what `--push-to-hub` uploads).

This is also the one error boundary. Every expected failure — a UserError, or
a path the system refuses (missing, not permitted, read-only, a file where a
directory belongs) — is one line on stderr and exit status 2. Anything else is
a bug: a one-line summary and exit status 1, with the traceback under the
global flag `--debug` (before or after the command).

It also sets up the command's process before the command imports torch: OpenMP threads that
sleep while they wait (a spinning thread pool runs 13x slower when another program is busy on
the machine), `--threads`, the trackers a run reports to (`--report-to`, checked before any model
loads), and the warnings a user sees: deprecation notices addressed to the developers of the
libraries we call are dropped; rlhfkit's own warnings (UserWarnings) and everyone's others stay.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import traceback
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import NoReturn

from rlhfkit.errors import USER_PATH_ERRNOS, UserError, describe_os_error, one_line, summarize
from rlhfkit.report_to import NO_TRACKER, REPORT_TO_ENV, parse_report_to, requested_trackers

# command name -> (module, one-line description). A two-word key is a sub-command.
COMMANDS: dict[str, tuple[str, str]] = {
    "ppo": ("rlhfkit.recipes.ppo", "PPO against a reward source, with a KL leash to a frozen reference"),
    "grpo": ("rlhfkit.recipes.grpo", "GRPO: ppo without a critic, 4 responses per prompt compared in their group"),
    "rloo": ("rlhfkit.recipes.grpo", "RLOO: ppo without a critic, each response against the mean of the others"),
    "sft": ("rlhfkit.recipes.sft", "supervised fine-tuning on demonstrations"),
    "rm": ("rlhfkit.recipes.reward", "train a reward model on comparisons, rankings or choices"),
    "generate": ("rlhfkit.recipes.generate", "sample K responses per prompt into candidates.jsonl"),
    "label": ("rlhfkit.recipes.label", "turn candidates into preference records with a judge"),
    "label serve": ("rlhfkit.labeling.cli", "serve the web page where people compare responses"),
    "label add-labeler": ("rlhfkit.labeling.cli", "create a labeller and print its access token"),
    "label export": ("rlhfkit.labeling.cli", "export human judgements as comparison or ranking records"),
    "dpo": ("rlhfkit.recipes.dpo", "direct preference optimisation (DPO, IPO, conservative DPO)"),
    "constitution": ("rlhfkit.recipes.constitution", "Constitutional AI: critique and revise, write demonstrations"),
    "gym": ("rlhfkit.recipes.gym", "REINFORCE, A2C, TRPO or PPO on a Gymnasium environment"),
    "demo": ("rlhfkit.recipes.demo", "the whole RLHF pipeline on the embedded model, with a report"),
    "loop": ("rlhfkit.recipes.loop", "the online loop: sample, label (judge or people), reward model, PPO; rounds"),
}


# commands whose output `--push-to-hub REPO` uploads once the run has succeeded (rlhfkit.hub says what goes)
PUSHABLE = ("sft", "rm", "dpo", "ppo", "grpo", "rloo", "gym", "generate", "label", "constitution")

# options every command takes, before or after the command's name
GLOBAL_OPTIONS: dict[str, str] = {
    "--report-to LIST": f"where runs report: tensorboard (default), wandb, trackio, mlflow or {NO_TRACKER}; a list "
    f"(or {REPORT_TO_ENV})",
    "--threads N": "CPU threads for torch (OMP_NUM_THREADS); OMP_WAIT_POLICY=PASSIVE unless you set one",
    "--debug": "print the traceback of an internal error",
    "--version": "print rlhfkit's version",
}
DEPRECATION_CATEGORIES = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)


def _usage() -> str:
    lines = ["usage: rlhfkit <command> [options]   (rlhfkit <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<18} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "global options:"]
    lines += [f"  {name:<18} {description}" for name, description in GLOBAL_OPTIONS.items()]
    return "\n".join(lines)


def _take_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """`argv` without `name VALUE` / `name=VALUE` (wherever they stand, as --debug), and the last value given."""
    rest: list[str] = []
    value = None
    arguments = iter(argv)
    for argument in arguments:
        if argument == name:
            value = next(arguments, None)
            if value is None:
                raise UserError(f"{name} needs a value (see rlhfkit --help)")
        elif argument.startswith(name + "="):
            value = argument.partition("=")[2]
        else:
            rest.append(argument)
    return rest, value


def prepare_environment(environ: MutableMapping[str, str], report_to: str | None, threads: str | None) -> int | None:
    """Set up the command's process before it imports torch (OpenMP reads its variables when it loads).

    OMP_WAIT_POLICY=PASSIVE unless the user chose a policy: measured here, `generate` with two
    spinning threads beside one other busy process took 13x as long as with one thread, and with
    passive waiting about as long. `threads` sets OMP_NUM_THREADS and is returned as a number for
    `set_torch_threads`. The trackers are checked here, before any model loads, and passed to the
    run through RLHFKIT_REPORT_TO.
    """
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        if not threads.isdigit() or int(threads) < 1:
            raise UserError(f"--threads {threads}: expected a whole number of threads, 1 or more")
        environ["OMP_NUM_THREADS"] = str(int(threads))
    if report_to is not None:
        environ[REPORT_TO_ENV] = ",".join(parse_report_to(report_to)) or NO_TRACKER
    else:
        requested_trackers(environ)  # an RLHFKIT_REPORT_TO naming a missing package is refused now, not after loading
    return None if threads is None else int(threads)


def set_torch_threads(threads: int | None) -> None:
    """torch's own thread count, once the command has loaded torch: it caps OMP_NUM_THREADS at the cores it sees."""
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None:
        torch.set_num_threads(threads)


def quiet_library_warnings() -> None:
    """Drop deprecation notices (meant for the libraries' developers, not for someone training a model).

    rlhfkit warns with UserWarning, which stays visible, as do other libraries' warnings of other kinds.
    """
    for category in DEPRECATION_CATEGORIES:
        warnings.filterwarnings("ignore", category=category)


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    return argv[0], argv[1:]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported on one line like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Run `rlhfkit ARGV...`; the warning filters apply while the command runs and are restored after it."""
    with warnings.catch_warnings():
        quiet_library_warnings()
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        argv, report_to = _take_option(argv, "--report-to")
        argv, threads = _take_option(argv, "--threads")
    except UserError as error:
        print(f"rlhfkit: error: {error}", file=sys.stderr)
        return 2
    if argv[:1] == ["--version"]:
        print(f"rlhfkit {importlib.metadata.version('rlhfkit')}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = _split_command(argv)
    if command not in COMMANDS:
        names = ", ".join(dict.fromkeys(name.split()[0] for name in COMMANDS))
        print(f"rlhfkit: error: unknown command {command!r}; the commands are {names}", file=sys.stderr)
        return 2
    try:
        thread_count = prepare_environment(os.environ, report_to, threads)
    except UserError as error:
        return _refuse(command, one_line(str(error)), debug)
    module_name, description = COMMANDS[command]
    return _run(command, module_name, description, rest, debug, thread_count)


def _run(command: str, module_name: str, description: str, rest: list[str], debug: bool, threads: int | None) -> int:
    """Parse and run one command inside the error boundary (see the module docstring)."""
    parser = None
    try:
        module = importlib.import_module(module_name)
        set_torch_threads(threads)
        parser = _Parser(prog=f"rlhfkit {command}", description=description)
        module.add_arguments(parser)
        if command in PUSHABLE:
            parser.add_argument(
                "--push-to-hub",
                metavar="REPO",
                help="after a successful run, upload what it made (final/, or its records) to this hub repository",
            )
        args = parser.parse_args(rest)  # exits (SystemExit) after --help or a one-line usage error
        args.command = command
        if getattr(args, "push_to_hub", None):
            return _run_and_push(command, module, args)
        return exit_code(module.run(args))
    except UserError as error:
        return _refuse(command, one_line(str(error)), debug)
    except OSError as error:
        if error.filename is None or error.errno not in USER_PATH_ERRNOS:
            return _internal_error(command, error, debug)
        return _refuse(command, describe_os_error(error), debug)
    except KeyboardInterrupt:
        print(f"rlhfkit {command}: interrupted; {_how_to_continue(parser)}", file=sys.stderr)
        return 130
    except Exception as error:
        return _internal_error(command, error, debug)


def _how_to_continue(parser: argparse.ArgumentParser | None) -> str:
    """After Ctrl-C: a command with --resume continues from its checkpoint; the others (loop, demo) by running again."""
    if parser is not None and parser.get_default("resume") is not None:
        return "the last checkpoint is intact, rerun with --resume"
    return "rerun the same command"


def _run_and_push(command: str, module, args: argparse.Namespace) -> int:
    """Run the command, then push the output directory its `run` returned; a failed push is one line, the outputs stay.

    The repository's name is checked before the run, so a typo costs no training. Under several
    processes only the first (RANK 0) pushes.
    """
    hub = importlib.import_module("rlhfkit.hub")  # huggingface_hub and httpx, only when a push is asked for
    repo = hub.check_repo_id(args.push_to_hub)
    directory = module.run(args)  # a run that succeeded returns its output directory
    code = exit_code(directory)
    if code != 0 or os.environ.get("RANK", "0") != "0":
        return code
    if not isinstance(directory, Path):
        raise UserError(f"--push-to-hub {repo}: rlhfkit {command} made no output directory to push")
    try:
        url = hub.push_to_hub(directory, repo)
    except UserError as error:
        raise UserError(f"{error}; the run's outputs stay in {directory}") from None
    print(f"rlhfkit {command}: pushed {directory} to the hub repository {repo}: {url}")
    return code


def exit_code(outcome: int | Path | None) -> int:
    """A command's exit status from what its `run` returned: a run directory means success."""
    return 0 if isinstance(outcome, Path) else int(outcome or 0)


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
