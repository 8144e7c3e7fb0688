"""The run skeleton every trainer fills in: output directory, config.yaml, resume, tracking, final/.

A trainer (SFT, RM, DPO, PPO, Gym) implements only what is its own — one training step, its
evaluation, what its checkpoint and `final/` hold, and its summary figures (the `Trainer`
protocol). `fit` does the rest, the same way for every command:

    1 restore   from the newest checkpoint with --resume (weights, optimiser, RNG, counters)
    2 record    config.yaml (the fully resolved configuration)
    3 evaluate  once before the first step (logged as step 0), so every run shows where it started
    4 loop      train_step; evaluate every `eval_every` steps; log metrics and samples;
                checkpoint every `checkpoint_every` steps (and at the end); a trainer whose
                evaluation set `stop_reason` (a monitor that saw the reward being hacked) ends
                the run there: a checkpoint, the reason in one line, then step 5 as usual
    5 finish    final/ written atomically, the metric plots, summary.json (with the runtime)

Under several processes every process runs every step; only the main process writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from rlhfkit.checkpoint import (
    MOMENTS_DROPPED,
    check_output_directory,
    compact_completed_run,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    write_directory_atomic,
)
from rlhfkit.config import config_from_args, load_yaml_mapping, save_config, to_dict
from rlhfkit.errors import UserError
from rlhfkit.runtime.core import Runtime
from rlhfkit.tracking import Tracker, plot_metrics, read_jsonl, write_json_atomic

T = TypeVar("T")
Tensors = dict[str, dict[str, torch.Tensor]]


@dataclasses.dataclass
class Samples:
    """What the model produced at a step, for samples.jsonl (scores NaN where none were taken)."""

    prompts: list[str]
    responses: list[str]
    scores: list[float]


StepOutput = tuple[dict[str, float], Samples | None]


class Trainer(Protocol):
    """What a recipe implements; `fit` owns everything else."""

    command: str  # names the default output directory and the progress bar
    config: Any  # the command's typed config (written to config.yaml)
    runtime: Runtime
    step: int  # steps completed; train_step advances it by one
    total_steps: int
    eval_every: int  # 0: evaluate only before the first and after the last step
    checkpoint_every: int  # 0: checkpoint only at the end
    plot_keys: Sequence[str]  # metrics drawn in training.png
    # optional: `stop_reason: str | None`, set by `evaluate` to end the run early (read by `stop_reason`)

    def train_step(self) -> StepOutput: ...

    def evaluate(self) -> StepOutput: ...

    def checkpoint_state(self) -> tuple[Tensors, dict[str, Any]]: ...

    def load_checkpoint_state(self, tensors: Tensors, state: dict[str, Any]) -> None: ...

    def save_final(self, directory: Path) -> None: ...

    def summary(self, out: Path, history: list[dict[str, Any]]) -> dict[str, Any]: ...


@dataclasses.dataclass
class RunDirectory:
    """A run's output directory and the checkpoint to resume from: checked before any model loads."""

    path: Path
    checkpoint: Path | None

    @classmethod
    def resolve(cls, out: str, command: str, resume: bool) -> RunDirectory:
        """`out` empty: `runs/<command>-<YYYYmmdd-HHMMSS>`.

        With `resume` the directory must hold a checkpoint; without it, it must not hold an
        earlier run (whose checkpoints a fresh start would overwrite).
        """
        path = Path(out or f"runs/{command}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_output_directory(path)
        if not resume:
            if list_checkpoints(path) or (path / "final").exists():
                raise UserError(f"{path} already holds a run; pass --resume to continue it, or choose another --out")
            return cls(path, None)
        checkpoint = latest_checkpoint(path)  # the newest intact one; damaged newer ones are named
        if checkpoint is None:
            raise UserError(f"--resume: {path} has no checkpoint to resume from")
        return cls(path, checkpoint)


def run_config(cls: type[T], args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> T:
    """The command's config from --config / --set / --out; with --resume the run's own config.yaml is the base.

    So a resumed run continues with the model, batch, lengths and coefficients it started with,
    and `--set` on the resume command changes only the keys it names. `defaults`: the command's own
    defaults under --config and --set (a resumed run's config.yaml holds them already). The config's
    `runtime` section is applied here (`apply_runtime`).
    """
    base = defaults
    if getattr(args, "resume", False):
        out = args.out or next((item.partition("=")[2] for item in reversed(args.set) if item.startswith("out=")), "")
        saved = Path(out, "config.yaml") if out else None
        if saved is None or not saved.is_file():
            raise UserError(f"--resume: {saved or '--out'} is missing; name the run to continue with --out DIR")
        base = load_yaml_mapping(saved)
    config = config_from_args(cls, args, base=base)
    apply_runtime(config)
    return config


def apply_runtime(config: Any) -> None:
    """`runtime.threads` > 0: torch computes on that many CPU threads (0 leaves the CLI's `--threads`)."""
    threads = getattr(getattr(config, "runtime", None), "threads", 0)
    if threads > 0:
        torch.set_num_threads(threads)


def due(step: int, every: int, total: int) -> bool:
    """True at every `every`-th step and at the last one (every = 0: only the last)."""
    return step == total or (every > 0 and step % every == 0)


def fit(trainer: Trainer, run: RunDirectory) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns the summary (empty on processes other than the main one)."""
    runtime, out = trainer.runtime, run.path
    if run.checkpoint is not None:
        restore(trainer, run.checkpoint)
    created = not out.exists()
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(trainer.config, out / "config.yaml")
    try:
        return _train(trainer, out)
    except BaseException:
        # a run that could not complete its first checkpoint leaves nothing behind (a user reward
        # function that raises at step 1, a Ctrl-C during the first step); later, the checkpoints stay
        if created and runtime.is_main and not list_checkpoints(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(trainer: Trainer, out: Path) -> dict[str, Any]:
    """Steps 3-5 of the module docstring into the existing run directory `out`."""
    runtime = trainer.runtime
    tracker = (
        Tracker(
            out,
            trainer.total_steps,
            f"rlhfkit {trainer.command}",
            start_step=trainer.step,
            hyperparameters=to_dict(trainer.config),
        )
        if runtime.is_main
        else None
    )
    started = time.time()
    try:
        if trainer.step == 0:
            log(tracker, 0, *trainer.evaluate())
        while trainer.step < trainer.total_steps and stop_reason(trainer) is None:
            metrics, samples = trainer.train_step()
            if due(trainer.step, trainer.eval_every, trainer.total_steps):
                eval_metrics, eval_samples = trainer.evaluate()
                metrics, samples = {**metrics, **eval_metrics}, eval_samples or samples
            log(tracker, trainer.step, metrics, samples)
            stopping = stop_reason(trainer) is not None
            if stopping or due(trainer.step, trainer.checkpoint_every, trainer.total_steps):
                rng = runtime.rng_states()  # gathered from every process, so every process asks
                if runtime.is_main:
                    tensors, state = trainer.checkpoint_state()
                    save_checkpoint(out, trainer.step, tensors, {**state, "step": trainer.step, "rng": rng})
    finally:
        if tracker is not None:
            tracker.close()
    if stop_reason(trainer) is not None and runtime.is_main:
        print(f"rlhfkit {trainer.command}: stopped at step {trainer.step}: {stop_reason(trainer)}")
    summary = finish(trainer, out, time.time() - started) if runtime.is_main else {}
    runtime.wait()
    return summary


def stop_reason(trainer: Trainer) -> str | None:
    """Why the trainer asks to end its run before `total_steps` (an optional attribute, set by its evaluation)."""
    return getattr(trainer, "stop_reason", None)


def restore(trainer: Trainer, checkpoint: Path) -> None:
    """Weights, optimiser and counters from `checkpoint`, then the RNG streams as they were when it was written."""
    tensors, state = load_checkpoint(checkpoint)
    trainer.load_checkpoint_state(tensors, state)
    trainer.step = state["step"]
    trainer.runtime.set_rng_states(state["rng"])
    if state.get(MOMENTS_DROPPED) and trainer.step < trainer.total_steps:
        print(
            f"rlhfkit {trainer.command}: warning: extending a completed run from step {trainer.step}: its checkpoint "
            "kept no optimiser moments, so AdamW starts them afresh",
            file=sys.stderr,
        )


def keeps_moments(config: Any) -> bool:
    """`optim.keep_moments` of the command's configuration (False where it has no such key)."""
    return bool(getattr(getattr(config, "optim", None), "keep_moments", False))


def log(tracker: Tracker | None, step: int, metrics: dict[str, float], samples: Samples | None) -> None:
    if tracker is None or not metrics:
        return
    tracker.log(step, metrics)
    if samples is not None:
        tracker.log_samples(step, samples.prompts, samples.responses, samples.scores)


def finish(trainer: Trainer, out: Path, seconds: float) -> dict[str, Any]:
    """final/, training.png and summary.json; the trainer adds its own figures (and any further plots)."""
    final = write_directory_atomic(out / "final", trainer.save_final)
    if trainer.step >= trainer.total_steps:  # completed (not stopped early): only an extension reads the moments
        compact_completed_run(out, drop_moments=not keeps_moments(trainer.config))
    plot_metrics(out / "metrics.jsonl", trainer.plot_keys, out / "training.png", f"rlhfkit {trainer.command}")
    history = read_jsonl(out / "metrics.jsonl")
    summary = {
        "steps": trainer.step,
        **trainer.summary(out, history),
        **trainer.runtime.describe(),
        "wall_s": seconds,
        "final": str(final),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
