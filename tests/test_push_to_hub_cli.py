"""`--push-to-hub REPO` on the commands: after a successful run its final/ (or its records) go to a hub stand-in.

The stand-in replaces huggingface_hub's HfApi inside rlhfkit.hub with a class that copies each upload
into a local folder, so nothing reaches the network.
"""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhfkit import hub as hub_module
from rlhfkit.cli import main
from rlhfkit.data import load_records

TOPICS = "cat dog food movie book weather friend house".split()
IDS = torch.tensor([[4, 40, 9, 50, 51, 52, 2]])


class LocalHub:
    """HfApi's create_repo and upload_folder over a folder: repositories are <root>/<type>/<owner>/<name>."""

    root = None
    fail_with: Exception | None = None

    def __init__(self, **kwargs):
        pass

    def create_repo(self, repo_id, *, repo_type=None, private=False, exist_ok=False):
        if LocalHub.fail_with is not None:
            raise LocalHub.fail_with
        (LocalHub.root / repo_type / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None):
        shutil.copytree(folder_path, LocalHub.root / repo_type / repo_id, dirs_exist_ok=True)
        return f"https://hub.local/{repo_id}/commit/1"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.setattr(hub_module, "HfApi", LocalHub)
    monkeypatch.setattr(LocalHub, "root", tmp_path / "hub")
    monkeypatch.setattr(LocalHub, "fail_with", None)
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    demos = [{"prompt": f"tell me about the {t}", "response": "good great happy"} for t in TOPICS]
    pairs = [{"prompt": f"tell me about the {t}", "chosen": "good great", "rejected": "bad sad"} for t in TOPICS]
    candidates = [{"prompt": f"tell me about the {t}", "responses": ["good", "good great day"]} for t in TOPICS]
    for name, rows in (("demos", demos), ("pairs", pairs), ("candidates", candidates)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def settings(model, out, data_file, *extra):
    sets = [f"model.name={model}", "model.dtype=float32", "train.steps=1", "train.batch_size=2", f"out={out}",
            f"data.train={data_file}", *extra]  # fmt: skip
    return ["--set", *sets]


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_sft_pushes_its_final_policy_after_the_run(hub, tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "sft"
    args = settings(tiny_model_dir, out, data / "demos.jsonl", "train.eval_samples=0")
    assert main(["sft", *args, "--push-to-hub", "me/policy"]) == 0
    assert f"rlhfkit sft: pushed {out} to the hub repository me/policy: https://hub.local/me/policy/commit/1" in (
        capsys.readouterr().out
    )
    pushed = hub / "model" / "me" / "policy"
    assert sorted(p.name for p in pushed.iterdir()) == sorted(p.name for p in (out / "final").iterdir())
    torch.testing.assert_close(
        logits(AutoModelForCausalLM.from_pretrained(pushed)),
        logits(AutoModelForCausalLM.from_pretrained(out / "final")),
    )


def test_rm_pushes_a_sequence_classifier(hub, tiny_model_dir, data, tmp_path):
    out = tmp_path / "rm"
    args = settings(tiny_model_dir, out, data / "pairs.jsonl", "normalize.enabled=false")
    assert main(["rm", *args, "--push-to-hub", "me/reward"]) == 0
    scorer = AutoModelForSequenceClassification.from_pretrained(hub / "model" / "me" / "reward")
    assert scorer.config.num_labels == 1


def test_label_pushes_its_records_file_as_a_dataset(hub, data, tmp_path):
    out = tmp_path / "labels"
    args = ["label", "--judge", "length", "--set", f"data.train={data / 'candidates.jsonl'}", f"out={out}"]
    assert main([*args, "--push-to-hub", "me/prefs"]) == 0
    pushed = hub / "dataset" / "me" / "prefs"
    assert [p.name for p in pushed.iterdir()] == ["comparisons.jsonl"]  # not config.yaml, summary.json
    assert load_records(pushed / "comparisons.jsonl", "comparisons") == load_records(
        out / "comparisons.jsonl", "comparisons"
    )


def test_a_failed_push_is_one_line_and_exit_2_and_the_run_stays(hub, data, tmp_path, capsys):
    LocalHub.fail_with = OSError("Connection refused")
    out = tmp_path / "labels"
    args = ["label", "--judge", "length", "--set", f"data.train={data / 'candidates.jsonl'}", f"out={out}"]
    assert main([*args, "--push-to-hub", "me/prefs"]) == 2
    (error,) = error_lines(capsys)
    assert error == (
        "rlhfkit label: error: push to the hub repository me/prefs: OSError: Connection refused; "
        f"the run's outputs stay in {out}"
    )
    assert (out / "comparisons.jsonl").is_file() and (out / "summary.json").is_file()


def test_a_repository_name_the_hub_refuses_is_refused_before_the_run(hub, data, tmp_path, capsys):
    out = tmp_path / "labels"
    args = ["label", "--judge", "length", "--set", f"data.train={data / 'candidates.jsonl'}", f"out={out}"]
    assert main([*args, "--push-to-hub", "me/bad name"]) == 2
    (error,) = error_lines(capsys)
    assert error.startswith("rlhfkit label: error: --push-to-hub me/bad name: Repo id must use alphanumeric chars")
    assert not out.exists() and not hub.exists()
