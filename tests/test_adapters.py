"""Adapters and final/ on disk: a LoRA run's PEFT adapter beside the merged model, adapter directories as
model.name, bf16 final/ for bf16 runs, and push_to_hub through huggingface_hub against a local stand-in."""

import json
import shutil

import datasets
import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import LocalTokenNotFoundError
from peft import AutoPeftModelForSequenceClassification, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

from rlhfkit.cli import main
from rlhfkit.data import load_records
from rlhfkit.errors import UserError
from rlhfkit.hub import push_to_hub
from rlhfkit.models import ScalarHeadModel, load_causal_lm, load_tokenizer

TOPICS = "cat dog food movie book weather friend house".split()
IDS = torch.tensor([[4, 40, 9, 50, 51, 52, 2]])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    demos = [{"prompt": f"tell me about the {t}", "response": "good great happy"} for t in TOPICS]
    pairs = [{"prompt": f"tell me about the {t}", "chosen": "good great", "rejected": "bad sad"} for t in TOPICS]
    for name, rows in (("demos", demos), ("pairs", pairs)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def train(command, model, out, *extra):
    sets = [f"model.name={model}", "model.dtype=float32", "train.steps=2", "train.batch_size=2", f"out={out}", *extra]
    return main([command, *[item for s in sets for item in ("--set", s)]])


LORA = ("model.lora.enabled=true", "model.lora.r=4", "optim.learning_rate=0.02")
DATA = {
    "sft": ("data.train={}/demos.jsonl", "train.eval_samples=0"),
    "dpo": ("data.train={}/pairs.jsonl", "train.kl_prompts=0"),
}


@pytest.fixture(scope="module")
def sft_lora(tiny_model_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sft-lora"
    assert train("sft", tiny_model_dir, out, *(s.format(data) for s in DATA["sft"]), *LORA) == 0
    return out


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_a_lora_run_saves_the_peft_adapter_that_plain_peft_loads_as_the_merged_model(
    command, tiny_model_dir, data, sft_lora, tmp_path
):
    out = sft_lora if command == "sft" else tmp_path / command
    if command != "sft":
        assert train(command, tiny_model_dir, out, *(s.format(data) for s in DATA[command]), *LORA) == 0
    adapter = out / "final" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model_dir and config["r"] == 4
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    with adapted.disable_adapter():
        assert (logits(adapted) - logits(merged)).abs().max() > 1e-3  # training moved the adapter
    torch.testing.assert_close(logits(adapted), logits(merged), atol=1e-5, rtol=0)


def test_model_name_takes_an_adapter_directory_and_a_chain_of_them(tiny_model_dir, data, sft_lora, tmp_path):
    adapter = sft_lora / "final" / "adapter"
    tokenizer = load_tokenizer(str(adapter))
    assert tokenizer.pad_token == "<|endoftext|>"
    merged = AutoModelForCausalLM.from_pretrained(sft_lora / "final").state_dict()
    loaded = load_causal_lm(str(adapter), tokenizer).state_dict()
    assert loaded.keys() == merged.keys()
    for key in merged:
        torch.testing.assert_close(loaded[key], merged[key], atol=1e-6, rtol=0)

    # a second LoRA stage on the first adapter: its adapter names the first as its base, and loads through it
    second = tmp_path / "second"
    assert train("sft", adapter, second, *(s.format(data) for s in DATA["sft"]), *LORA) == 0
    config = json.loads((second / "final" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(adapter.resolve())
    chained = load_causal_lm(str(second / "final" / "adapter"), tokenizer)
    torch.testing.assert_close(
        logits(chained), logits(AutoModelForCausalLM.from_pretrained(second / "final")), atol=1e-5, rtol=0
    )


def test_adapter_directories_that_cannot_be_used_are_one_line_errors(tiny_model_dir, tmp_path):
    (tmp_path / "nobase").mkdir()
    (tmp_path / "nobase" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(UserError, match="names no base_model_name_or_path"):
        load_causal_lm(str(tmp_path / "nobase"))
    backbone = get_peft_model(AutoModel.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    backbone.save_pretrained(tmp_path / "backbone")  # keys of a model without the LM head's "model." prefix
    with pytest.raises(UserError, match="cannot load the adapter .* its tensors do not fit the base model"):
        load_causal_lm(str(tmp_path / "backbone"))


def test_a_lora_reward_model_saves_a_sequence_classification_adapter(tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "rm"
    extra = (f"data.train={data}/pairs.jsonl", "normalize.num_prompts=4", "normalize.generation.max_new_tokens=4")
    assert train("rm", tiny_model_dir, out, *extra, *LORA) == 0
    adapter = out / "final" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    classifier = AutoPeftModelForSequenceClassification.from_pretrained(str(adapter), num_labels=1).eval()
    reward = ScalarHeadModel.load(out / "final").eval()
    assert reward.gain != 1.0  # normalised: the gain is folded into score.weight
    offset = json.loads((out / "final" / "config.json").read_text())["score_offset"]
    with torch.no_grad():
        expected = reward(IDS, torch.ones_like(IDS)) - offset  # the standard class has no score bias
        torch.testing.assert_close(classifier(IDS).logits[:, 0], expected, atol=1e-4, rtol=0)
    # a reward model's adapter is not a policy
    assert train("sft", adapter, tmp_path / "sft", f"data.train={data}/demos.jsonl") == 2
    assert "a SEQ_CLS adapter (a reward model's) is not a language model" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sft", "rm"])
def test_final_is_bf16_only_when_training_computed_in_bf16(command, tiny_model_dir, data, tmp_path):
    extra = {"sft": DATA["sft"][:1], "rm": ("data.train={}/pairs.jsonl", "normalize.enabled=false")}[command]
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        assert train(command, tiny_model_dir, out, *(s.format(data) for s in extra), f"model.dtype={dtype}") == 0
        final = load_file(str(out / "final" / "model.safetensors"))
        trained = load_file(str(out / "checkpoints" / "step-2" / "trainable.safetensors"))
        dtype_ = getattr(torch, dtype)
        assert {t.dtype for t in final.values()} == {dtype_}
        assert json.loads((out / "final" / "config.json").read_text())["dtype"] == dtype
        names = {key: key if command == "sft" else f"backbone.{key.removeprefix('model.')}" for key in final}
        compared = [key for key in final if names[key] in trained]  # all but the reward model's folded score
        assert len(compared) >= len(final) - 1
        for key in compared:  # the trained fp32 weights, rounded to bf16 in a bf16 run
            assert torch.equal(final[key], trained[names[key]].to(dtype_)), key
        sizes[dtype] = (out / "final" / "model.safetensors").stat().st_size
        if command == "rm":
            ScalarHeadModel.load(out / "final")  # rlhfkit reads it back
    assert sizes["bfloat16"] < 0.55 * sizes["float32"]


# ---------------------------------------------------------------------------
# push_to_hub against a local stand-in of the hub
# ---------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """HfApi's create_repo and upload_folder replaced by fakes that record the call and copy into a local folder."""
    root, calls = tmp_path / "hub", []

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", repo_id, repo_type, private, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
        calls.append(("upload_folder", repo_id, repo_type, commit_message))
        shutil.copytree(folder_path, root / repo_type / repo_id, dirs_exist_ok=True)
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root, calls


def test_push_a_run_pushes_its_final_model(hub, sft_lora):
    root, calls = hub
    assert push_to_hub(sft_lora, "me/policy", private=True) == "https://huggingface.co/me/policy/commit/abc"
    assert calls == [
        ("create_repo", "me/policy", "model", True, True),
        ("upload_folder", "me/policy", "model", "Upload final with rlhfkit"),
    ]
    pushed = root / "model" / "me/policy"
    assert (pushed / "adapter" / "adapter_config.json").is_file()
    torch.testing.assert_close(
        logits(AutoModelForCausalLM.from_pretrained(pushed)),
        logits(AutoModelForCausalLM.from_pretrained(sft_lora / "final")),
    )
    push_to_hub(sft_lora / "final" / "adapter", "me/adapter")
    assert calls[-1][2] == "model" and (root / "model" / "me/adapter" / "adapter_model.safetensors").is_file()


def test_push_a_saved_dataset_pushes_its_splits_as_parquet(hub, tmp_path):
    root, calls = hub
    splits = {"train": [{"prompt": "a"}, {"prompt": "b"}], "test": [{"prompt": "c"}]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(tmp_path / "d")
    push_to_hub(tmp_path / "d", "me/data")
    pushed = root / "dataset" / "me/data"
    assert sorted(p.name for p in (pushed / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    assert load_records(pushed, "prompts") == splits["train"]  # split-named files, as the hub reads them
    assert load_records(f"{pushed}:test", "prompts") == splits["test"]
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    push_to_hub(tmp_path / "pairs.jsonl", "me/pairs")
    assert calls[-1][2] == "dataset" and (root / "dataset" / "me/pairs" / "pairs.jsonl").is_file()


def test_push_refuses_what_it_cannot_push_and_reports_hub_errors_in_one_line(hub, monkeypatch, tmp_path):
    with pytest.raises(UserError, match="holds nothing to push"):
        push_to_hub(tmp_path, "me/x")
    with pytest.raises(UserError, match="no such file or directory to push"):
        push_to_hub(tmp_path / "absent", "me/x")

    def no_token(self, *args, **kwargs):
        raise LocalTokenNotFoundError("Token is required, but no token found")

    monkeypatch.setattr(HfApi, "create_repo", no_token)
    (tmp_path / "data.jsonl").write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError, match="^push to the hub repository me/x: LocalTokenNotFoundError: Token is required"):
        push_to_hub(tmp_path / "data.jsonl", "me/x")
