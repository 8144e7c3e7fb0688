"""Checkpoint manifests: a damaged newest checkpoint is named and skipped; resume continues from the previous one."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.checkpoint import (
    checkpoint_damage,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rlhfkit.cli import main
from rlhfkit.errors import UserError


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_middle_bytes(path):
    """Same size, different bytes: only the checksum can tell."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def write_steps(out, steps, keep=2):
    for step in steps:
        save_checkpoint(out, step, {"model": {"w": torch.full((4,), float(step))}}, {"step": step}, keep=keep)


def test_manifest_records_each_file_size_and_sha256(tmp_path):
    write_steps(tmp_path, [1])
    directory = tmp_path / "checkpoints" / "step-1"
    manifest = json.loads((directory / "manifest.json").read_text())["files"]
    assert set(manifest) == {"model.safetensors", "state.pt"}
    for name, entry in manifest.items():
        data = (directory / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert checkpoint_damage(directory) is None


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: truncate(d / "model.safetensors"), "model.safetensors: size mismatch"),
        (lambda d: flip_middle_bytes(d / "state.pt"), "state.pt: checksum mismatch"),
        (lambda d: (d / "state.pt").unlink(), "state.pt: missing"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: unreadable"),
    ],
)
def test_damage_is_named_and_the_previous_checkpoint_is_used(tmp_path, capsys, damage, problem):
    write_steps(tmp_path, [2, 4])
    newest, previous = tmp_path / "checkpoints" / "step-4", tmp_path / "checkpoints" / "step-2"
    damage(newest)
    assert checkpoint_damage(newest) == problem
    assert latest_checkpoint(tmp_path) == previous
    warning = f"rlhfkit: warning: checkpoint {newest} is damaged ({problem}); resuming from {previous}\n"
    assert capsys.readouterr().err == warning


def test_no_intact_checkpoint_is_refused_naming_each(tmp_path):
    write_steps(tmp_path, [2, 4])
    truncate(tmp_path / "checkpoints" / "step-4" / "model.safetensors")
    flip_middle_bytes(tmp_path / "checkpoints" / "step-2" / "state.pt")
    with pytest.raises(UserError) as refused:
        latest_checkpoint(tmp_path)
    message = str(refused.value)
    assert "step-4 (model.safetensors: size mismatch)" in message
    assert "step-2 (state.pt: checksum mismatch)" in message


def test_a_checkpoint_without_manifest_is_accepted_unverified(tmp_path):
    """Written before manifests existed: accepted if its state.pt is there; loading it is the test."""
    write_steps(tmp_path, [3])
    directory = tmp_path / "checkpoints" / "step-3"
    (directory / "manifest.json").unlink()
    assert latest_checkpoint(tmp_path) == directory
    (directory / "state.pt").unlink()
    with pytest.raises(UserError, match="state.pt: missing"):
        latest_checkpoint(tmp_path)


def test_retention_keeps_two(tmp_path):
    write_steps(tmp_path, [1, 2, 3, 4])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-3", "step-4"]
    with pytest.raises(ValueError, match="at least 2"):
        write_steps(tmp_path, [5], keep=1)


def test_a_checkpoint_written_after_resuming_from_an_older_one_removes_the_damaged_newer_one(tmp_path):
    write_steps(tmp_path, [2, 4, 6])
    truncate(tmp_path / "checkpoints" / "step-6" / "state.pt")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-4"
    write_steps(tmp_path, [5])  # the resumed run goes on from step 4
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-4", "step-5"]


@pytest.mark.parametrize("victim", ["model.safetensors", "state.pt"])
def test_load_checkpoint_names_a_file_it_cannot_read(tmp_path, victim):
    write_steps(tmp_path, [1])
    directory = tmp_path / "checkpoints" / "step-1"
    truncate(directory / victim, keep=0.3)
    with pytest.raises(UserError, match=f"checkpoint file {directory / victim} cannot be read"):
        load_checkpoint(directory)


# ---------------------------------------------------------------------------
# Through the CLI: a real SFT run on the tiny model
# ---------------------------------------------------------------------------


def sft(tiny_model_dir, out, *extra):
    settings = [
        f"model.name={tiny_model_dir}",
        "model.dtype=float32",
        "train.eval_samples=0",
        "train.batch_size=4",
        "train.steps=6",
        "train.checkpoint_every=2",
        "train.eval_every=3",
        "optim.learning_rate=0.01",
        "optim.schedule=linear",
        f"out={out}",
    ]
    return main(["sft", "--set", *settings, *extra])


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    assert sft(tiny_model_dir, out) == 0
    return out


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: truncate(d / "trainable.safetensors"), "trainable.safetensors: size mismatch"),
        (lambda d: flip_middle_bytes(d / "state.pt"), "state.pt: checksum mismatch"),
    ],
)
def test_resume_skips_a_damaged_latest_checkpoint_and_ends_bitwise_equal(
    tiny_model_dir, straight_run, tmp_path, capsys, damage, problem
):
    out = tmp_path / "run"
    assert sft(tiny_model_dir, out) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step-4", "step-6"]
    damage(out / "checkpoints" / "step-6")
    shutil.rmtree(out / "final")  # as if the disk failed before the run could finish
    capsys.readouterr()
    assert main(["sft", "--resume", "--out", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhfkit: warning")]
    older = out / "checkpoints" / "step-4"
    assert (
        f"rlhfkit: warning: checkpoint {out / 'checkpoints' / 'step-6'} is damaged ({problem}); resuming from {older}"
        in warnings
    )
    expected = load_file(str(straight_run / "final" / "model.safetensors"))
    resumed = load_file(str(out / "final" / "model.safetensors"))
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert checkpoint_damage(out / "checkpoints" / "step-6") is None  # rewritten by the resumed run


def test_resume_with_every_checkpoint_damaged_is_one_line_and_exit_2(tiny_model_dir, straight_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight_run, out)
    for checkpoint in list_checkpoints(out):
        truncate(checkpoint / "state.pt")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["sft", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhfkit sft: error: no intact checkpoint to resume from: ")
    assert "step-6 (state.pt: size mismatch)" in err[0] and "step-4 (state.pt: size mismatch)" in err[0]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
