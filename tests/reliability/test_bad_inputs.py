"""Every command, fed damaged files, bad paths and bad settings: exit 2, one line naming the culprit, nothing written.

The cases are built in bad_input_cases.py (truncated, corrupt, non-UTF-8 and UTF-16 files,
wrong types and record kinds, huge lines and deep nesting, missing and unwritable paths,
models that cannot load, a hub id with no network, scalars where a section belongs).
Each runs through `rlhfkit.cli.main` as a user would type it. What must hold:

- exit status 2;
- exactly one line on stderr (progress bars and `rlhfkit: warning` lines aside), naming the culprit;
- no traceback;
- nothing written: the test's directory holds exactly what the case put there.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from bad_input_cases import (
    DATA_DAMAGE,
    MODEL_DAMAGE,
    SECONDARY_DAMAGE,
    Case,
    Context,
    config_cases,
    constitution_cases,
    data_case,
    good_file,
    loop_cases,
    model_case,
    output_cases,
    user_code_cases,
)

from rlhfkit.cli import main
from rlhfkit.models import loading


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    settings: Callable[[Context], list[str]]  # good, quick settings the cases spoil one at a time
    data: dict[str, str]  # data key -> record kind it takes; the first is the command's main file
    model_key: str  # the key naming a model ("" for none)
    section: str  # a config section, for the scalar-instead-of-section cases
    finished_file: str  # what an earlier run leaves in its output directory
    resumable: bool = True
    model_settings: tuple[str, ...] = ()


def _set(ctx: Context, *items: str) -> list[str]:
    return ["--set", *items, f"out={ctx.out}"]


def _lm(ctx: Context) -> list[str]:
    return [f"model.name={ctx.tiny}", "model.dtype=float32", "generation.max_new_tokens=2"]


CHECKPOINT = "checkpoints/step-1/state.pt"
COMMANDS = [
    Command(
        "sft",
        lambda c: _set(
            c,
            *_lm(c),
            f"data.train={good_file(c, 'demonstrations')}",
            "train.steps=1",
            "train.batch_size=2",
            "train.eval_samples=1",
        ),  # fmt: skip
        {"data.train": "demonstrations", "data.eval": "demonstrations", "data.prompts": "prompts"},
        "model.name",
        "train",
        CHECKPOINT,
    ),
    Command(
        "rm",
        lambda c: _set(
            c,
            f"model.name={c.tiny}",
            "model.dtype=float32",
            f"data.train={good_file(c, 'comparisons')}",
            "train.steps=1",
            "train.batch_size=2",
            "normalize.enabled=false",
        ),  # fmt: skip
        {"data.train": "comparisons", "data.eval": "comparisons"},
        "model.name",
        "train",
        CHECKPOINT,
    ),
    Command(
        "dpo",
        lambda c: _set(
            c,
            *_lm(c),
            f"data.train={good_file(c, 'comparisons')}",
            "train.steps=1",
            "train.batch_size=2",
            "train.kl_prompts=1",
        ),  # fmt: skip
        {"data.train": "comparisons", "data.eval": "comparisons", "data.prompts": "prompts"},
        "model.name",
        "train",
        CHECKPOINT,
    ),
    Command(
        "ppo",
        lambda c: _set(
            c,
            *_lm(c),
            f"data.prompts={good_file(c, 'prompts')}",
            "train.steps=1",
            "train.batch_size=2",
            "train.ppo_epochs=1",
        ),  # fmt: skip
        {"data.prompts": "prompts", "data.ptx": "demonstrations"},
        "model.name",
        "train",
        CHECKPOINT,
    ),
    Command(
        "generate",
        lambda c: _set(c, *_lm(c), f"data.prompts={good_file(c, 'prompts')}", "num_responses=2"),
        {"data.prompts": "prompts"},
        "model.name",
        "generation",
        "summary.json",
        resumable=False,
    ),
    Command(
        "label",
        lambda c: ["--judge", "sentiment", *_set(c, f"data.train={good_file(c, 'candidates')}", "dtype=float32")],
        {"data.train": "candidates"},
        "reward.model",
        "reward",
        "summary.json",
        resumable=False,
        model_settings=("--set", "reward.kind=model"),
    ),
    Command(
        "constitution",
        lambda c: _set(c, *_lm(c), f"data.prompts={good_file(c, 'prompts')}", "data.limit=1"),
        {"data.prompts": "prompts"},
        "model.name",
        "critique",
        "summary.json",
        resumable=False,
    ),
    Command(
        "gym",
        lambda c: _set(
            c,
            "env.id=CartPole-v1",
            "env.num_envs=1",
            "ppo.rollout_steps=16",
            "train.total_timesteps=32",
            "train.mini_batch_size=16",
            "eval.episodes=1",
        ),  # fmt: skip
        {},
        "",
        "train",
        CHECKPOINT,
    ),
    Command(
        "loop",
        lambda c: [
            "--judge",
            "sentiment",
            *_set(
                c,
                *_lm(c),
                f"data.prompts={good_file(c, 'prompts')}",
                f"data.eval_prompts={good_file(c, 'prompts')}",
                "data.num_eval_prompts=2",
                "loop.rounds=1",
                "loop.labels_per_round=2",
                "loop.ppo_iterations=1",
                "train.batch_size=2",
                "train.ppo_epochs=1",
                "rm.train.steps=1",
                "rm.train.batch_size=2",
                "rm.ensemble_size=2",
                "monitor.num_prompts=2",
            ),
        ],  # fmt: skip
        {"data.prompts": "prompts", "data.eval_prompts": "prompts", "monitor.prompts": "prompts"},
        "model.name",
        "loop",
        "config.yaml",  # rerunning on a loop's directory continues it: only another loop's settings are refused
        resumable=False,
    ),
]
BY_NAME = {command.name: command for command in COMMANDS}


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for command in COMMANDS:
        for index, (key, record_kind) in enumerate(command.data.items()):
            damages = DATA_DAMAGE if index == 0 else SECONDARY_DAMAGE
            cases += [data_case(command.name, key, record_kind, damage) for damage in damages]
        if command.model_key:
            cases += [
                model_case(command.name, command.model_key, damage, command.model_settings) for damage in MODEL_DAMAGE
            ]
        cases += config_cases(command.name, command.section)
        cases += output_cases(command.name, command.finished_file, command.resumable)
    cases += user_code_cases("ppo") + user_code_cases("label") + constitution_cases() + loop_cases()
    cases += [
        Case("gym", "config", "unknown-environment", lambda c: (["--set", "env.id=NoSuchEnv-v9"], "NoSuchEnv-v9")),
        Case("gym", "config", "env-id-with-path", lambda c: (["--set", "env.id=../../etc:x"], "../../etc:x")),
    ]
    return cases


# Known gaps, each in a file this suite's author does not own, reported to the lead: {case id: reason}.
CASES = [pytest.param(case, id=case.id) for case in all_cases()]


@pytest.fixture
def offline(monkeypatch):
    """No network, as the tests promise: hub ids fail at once instead of retrying for half a minute."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can write in: mode 0555, or for root (which ignores modes) the immutable flag."""
    path = tmp_path / "locked"
    path.mkdir()
    path.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    writable = _writable(path)
    yield None if writable else path
    if immutable:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)


def _writable(path: Path) -> bool:
    try:
        (path / ".probe").mkdir()
    except OSError:
        return False
    (path / ".probe").rmdir()
    return True


def refuse_to_load(name: str) -> str:
    raise AssertionError(f"model {name} loaded before the output path was checked")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (file contents, None for directories), bytecode caches aside."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if "__pycache__" not in p.parts
    }


def error_lines(err: str) -> list[str]:
    """stderr less progress bars (tqdm redraws with \\r) and `rlhfkit: warning` lines."""
    lines = [line.rsplit("\r", 1)[-1] for line in err.splitlines()]
    return [line for line in lines if line.strip() and "%|" not in line and not line.startswith("rlhfkit: warning")]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case, tiny_model_dir, tmp_path, read_only_dir, offline, monkeypatch, capsys
):
    ctx = Context(tmp_path / "case", tiny_model_dir, read_only_dir)
    ctx.tmp.mkdir()
    monkeypatch.syspath_prepend(str(ctx.tmp))  # where the user-code cases write their modules
    command = BY_NAME[case.command]
    base = command.settings(ctx)
    try:
        extra, culprit = case.build(ctx)
    except LookupError as missing:
        pytest.skip(str(missing))
    if case.kind == "output":  # an output path is checked before any model loads: loading one now is a failure
        monkeypatch.setattr(loading, "resolve_model_path", refuse_to_load)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main([case.command, *base, *extra])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert "Traceback" not in err, err
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"rlhfkit {case.command}: error: "), lines[0]
    assert culprit in lines[0], (culprit, lines[0])
    assert snapshot(tmp_path) == before
