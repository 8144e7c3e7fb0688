"""Disk after a completed run: final/ shares the checkpoint's identical weights, the moments go; resume stays exact."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.checkpoint import MOMENTS_DROPPED, checkpoint_damage, without_optimizer_moments
from rlhfkit.cli import main

TOPICS = "cat dog food movie book weather friend house".split()


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "demos.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"about the {t}", "response": "good great"}) + "\n" for t in TOPICS))
    return path


def sft(model, demos, out, *extra):
    settings = [f"model.name={model}", "model.dtype=float32", f"data.train={demos}", "train.steps=2",
                "train.batch_size=2", "train.eval_samples=0", "train.checkpoint_every=1", "optim.learning_rate=1e-3",
                f"out={out}", *extra]  # fmt: skip
    return main(["sft", "--set", *settings])


def state(checkpoint):
    return torch.load(checkpoint / "state.pt", weights_only=False)


def moments(checkpoint):
    return state(checkpoint)["optimizer"]["state"]


@pytest.fixture(scope="module")
def straight(tiny_model_dir, demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert sft(tiny_model_dir, demos, out) == 0
    return out


def test_a_completed_run_keeps_one_copy_of_its_weights_and_no_moments(straight):
    newest, older = straight / "checkpoints" / "step-2", straight / "checkpoints" / "step-1"
    weights = straight / "final" / "model.safetensors"
    assert weights.samefile(newest / "trainable.safetensors")  # one file on disk, two names
    assert checkpoint_damage(newest) is None  # its manifest still matches every byte
    assert moments(newest) == {} and state(newest)[MOMENTS_DROPPED]
    assert state(newest)["optimizer"]["param_groups"] and state(newest)["scheduler"]["last_epoch"] == 2
    assert len(moments(older)) == len(load_file(str(older / "trainable.safetensors")))  # the fallback is untouched


def test_an_interrupted_run_resumes_bitwise_from_a_checkpoint_with_its_moments(
    tiny_model_dir, demos, straight, tmp_path
):
    out = tmp_path / "interrupted"
    assert sft(tiny_model_dir, demos, out) == 0
    for name in ("checkpoints/step-2", "final", "summary.json"):  # as if the run had died after step 1
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert moments(out / "checkpoints" / "step-1")
    assert main(["sft", "--resume", "--out", str(out)]) == 0
    expected, resumed = (load_file(str(run / "final" / "model.safetensors")) for run in (straight, out))
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_extending_a_completed_run_warns_that_the_moments_restart(tiny_model_dir, demos, straight, tmp_path, capsys):
    out = tmp_path / "extended"
    shutil.copytree(straight, out)
    assert main(["sft", "--resume", "--out", str(out), "--set", "train.steps=3"]) == 0
    assert "warning: extending a completed run from step 2: its checkpoint kept no optimiser moments" in (
        capsys.readouterr().err
    )
    assert moments(out / "checkpoints" / "step-2") == {} and (out / "checkpoints" / "step-3").is_dir()


def test_a_lora_checkpoint_holds_the_adapter_and_its_moments_only(tiny_model_dir, demos, tmp_path):
    out = tmp_path / "lora"
    assert sft(tiny_model_dir, demos, out, "model.lora.enabled=true", "model.lora.r=2") == 0
    older = out / "checkpoints" / "step-1"
    weights = load_file(str(older / "trainable.safetensors"))
    assert weights and all("lora_" in name for name in weights)
    assert len(moments(older)) == len(weights)
    assert not (out / "final" / "model.safetensors").samefile(out / "checkpoints" / "step-2" / "trainable.safetensors")


def test_without_optimizer_moments_empties_every_optimizer_state_and_nothing_else():
    adam = {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    given = {"optimizer": adam, "critic": [adam], "scheduler": {"last_epoch": 3}, "step": 3}
    assert without_optimizer_moments(given) == {
        "optimizer": {"state": {}, "param_groups": adam["param_groups"]},
        "critic": [{"state": {}, "param_groups": adam["param_groups"]}],
        "scheduler": {"last_epoch": 3},
        "step": 3,
    }
    assert adam["state"]  # the given state is not changed


def test_keep_moments_keeps_them_and_still_shares_the_weights(tiny_model_dir, demos, tmp_path):
    out = tmp_path / "kept"
    assert sft(tiny_model_dir, demos, out, "optim.keep_moments=true") == 0
    newest = out / "checkpoints" / "step-2"
    assert len(moments(newest)) == len(load_file(str(newest / "trainable.safetensors")))
    assert MOMENTS_DROPPED not in state(newest)
    assert (out / "final" / "model.safetensors").samefile(newest / "trainable.safetensors")
