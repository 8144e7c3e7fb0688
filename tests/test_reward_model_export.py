"""A reward model of `rlhfkit rm` outside rlhfkit: plain transformers loads its final/ as a sequence classifier
(no missing or unexpected keys) and scores as rlhfkit does; reward directories of the earlier layout still load."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

from rlhfkit.cli import main
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.models import ScalarHeadModel, load_backbone, load_tokenizer
from rlhfkit.rewards import model_reward, score_items

POSITIVE = "good great happy love wonderful nice".split()
NEGATIVE = "bad sad hate terrible awful boring".split()
RECORDS = [{"prompt": "tell me about the cat"}, {"prompt": "what is the weather like today"}] * 2
RESPONSES = ["the cat is very happy", "bad", "it is a beautiful day and i love it", "terrible awful pain"]


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "comparisons.jsonl"
    rows = [
        {
            "prompt": f"tell me about the {topic}",
            "chosen": f"the {topic} is {good}",
            "rejected": f"the {topic} is {bad}",
        }
        for topic in ("cat", "dog", "book", "movie")
        for good, bad in zip(POSITIVE, NEGATIVE)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module", params=["last", "mean"])
def final(request, tiny_model_dir, comparisons, tmp_path_factory):
    """final/ of a short `rlhfkit rm` run, normalised against the tiny policy (so gain and bias are not 1 and 0)."""
    out = tmp_path_factory.mktemp(f"rm-{request.param}") / "run"
    settings = [
        f"model.name={tiny_model_dir}",
        "model.dtype=float32",
        f"data.train={comparisons}",
        f"pooling={request.param}",
        "train.steps=3",
        "normalize.num_prompts=4",
        "normalize.generation.max_new_tokens=4",
        f"out={out}",
    ]
    assert main(["rm", "--set", *settings]) == 0
    return out / "final"


def rlhfkit_scores(directory) -> list[float]:
    reward = model_reward(str(directory), batch_size=3, dtype="float32")
    return reward([r["prompt"] for r in RECORDS], RESPONSES, RECORDS)


def hf_inputs(directory, side: str = "right") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch tokenised as rlhfkit scores it: the prompt through the chat template, then response + EOS."""
    tokenizer = load_tokenizer(str(directory))
    items = [tokenize_prompt_response(tokenizer, record, text, 256) for record, text in zip(RECORDS, RESPONSES)]
    return pad_batch(items, tokenizer.pad_token_id, side=side)


def classifier_scores(model, input_ids, attention_mask, **kwargs) -> list[float]:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask.long(), **kwargs).logits[:, 0].tolist()


def loaded(directory, **kwargs):
    model, info = AutoModelForSequenceClassification.from_pretrained(directory, output_loading_info=True, **kwargs)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    return model.eval()


def test_final_is_a_standard_classifier_with_the_real_pad_token_and_a_model_card(final):
    config, meta = (json.loads((final / name).read_text()) for name in ("config.json", "reward.json"))
    tokenizer = load_tokenizer(str(final))
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["id2label"] == {"0": "reward"}
    assert config["pad_token_id"] == tokenizer.pad_token_id == 0 != tokenizer.eos_token_id
    assert config["score_pooling"] == meta["pooling"] and meta["normalized"] and meta["bias"] != 0
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_rlhfkit_reward.RlhfkitRewardModel"
    assert not (final / "scalar_head.safetensors").exists()
    card = (final / "README.md").read_text()
    assert "trust_remote_code=True" in card and f"pooling: {meta['pooling']}" in card


def test_plain_transformers_scores_as_rlhfkit_does(final):
    """trust_remote_code=True: the shipped class adds the offset (and averages for mean pooling): the same scores."""
    expected = rlhfkit_scores(final)
    model = loaded(final, trust_remote_code=True)
    for side in ("right", "left"):
        input_ids, attention_mask, response_mask = hf_inputs(final, side)
        assert classifier_scores(model, input_ids, attention_mask) == pytest.approx(expected, abs=1e-4), side
        given_mask = classifier_scores(model, input_ids, attention_mask, response_mask=response_mask)
        assert given_mask == pytest.approx(expected, abs=1e-4), side
    assert max(expected) - min(expected) > 1e-2  # the rows really differ


def test_the_standard_class_alone_scores_the_offset_lower(final):
    """Without remote code: LlamaForSequenceClassification, same weights, read at the last token, no offset.

    Last pooling then scores exactly score_offset lower; mean pooling differently, which is why the model card
    sends it to the shipped class."""
    model = loaded(final)
    assert type(model) is LlamaForSequenceClassification and abs(model.config.score_offset) > 1e-3
    expected = rlhfkit_scores(final)
    input_ids, attention_mask, _ = hf_inputs(final)
    shifted = [score + model.config.score_offset for score in classifier_scores(model, input_ids, attention_mask)]
    if model.config.score_pooling == "last":
        assert shifted == pytest.approx(expected, abs=1e-4)
    else:
        assert shifted != pytest.approx(expected, abs=1e-2)


def random_reward_model(tiny_model_dir, gain, bias, pooling="last"):
    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(1)
    model = ScalarHeadModel(load_backbone(tiny_model_dir, tokenizer), gain=gain, bias=bias, pooling=pooling)
    torch.nn.init.normal_(model.head.bias)
    return model.eval(), tokenizer


def test_without_offset_the_standard_class_is_exact_and_no_code_is_shipped(tiny_model_dir, tmp_path):
    model, tokenizer = random_reward_model(tiny_model_dir, gain=2.0, bias=0.0)
    model.bias = -model.gain * model.head.bias.item()  # the head's bias cancelled: offset 0
    model.save(tmp_path, tokenizer)
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())
    assert not (tmp_path / "modeling_rlhfkit_reward.py").exists()
    assert "trust_remote_code" not in (tmp_path / "README.md").read_text()
    input_ids, attention_mask, response_mask = hf_inputs(tmp_path)
    with torch.no_grad():
        expected = model(input_ids, attention_mask, response_mask).tolist()
    assert classifier_scores(loaded(tmp_path), input_ids, attention_mask) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_saved_and_loaded_back_the_model_is_the_same(tiny_model_dir, tmp_path, pooling):
    """The raw head comes back (a PPO critic starts from it), and so do gain, bias and the scores."""
    model, tokenizer = random_reward_model(tiny_model_dir, gain=1.7, bias=-0.4, pooling=pooling)
    model.save(tmp_path, tokenizer, {"eval": {"eval_accuracy": 0.75}})
    back = ScalarHeadModel.load(tmp_path).eval()
    assert (back.gain, back.bias, back.pooling) == (1.7, -0.4, pooling)
    assert torch.allclose(back.head.weight, model.head.weight, atol=1e-6)
    assert torch.allclose(back.head.bias, model.head.bias, atol=1e-6)
    items = [tokenize_prompt_response(tokenizer, r, text, 64) for r, text in zip(RECORDS, RESPONSES)]
    with torch.no_grad():
        before, after = (score_items(m, items, tokenizer.pad_token_id, "float32").tolist() for m in (model, back))
    assert after == pytest.approx(before, abs=1e-5)
    assert json.loads((tmp_path / "reward.json").read_text())["eval"] == {"eval_accuracy": 0.75}


def test_a_reward_directory_of_the_earlier_layout_still_loads_and_scores_the_same(tiny_model_dir, tmp_path):
    """The layout rlhfkit wrote before: the backbone alone, scalar_head.safetensors and reward.json."""
    model, tokenizer = random_reward_model(tiny_model_dir, gain=0.8, bias=0.3, pooling="mean")
    model.backbone.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    save_file(
        {k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, tmp_path / "scalar_head.safetensors"
    )
    (tmp_path / "reward.json").write_text(json.dumps({"gain": 0.8, "bias": 0.3, "pooling": "mean"}))
    back = ScalarHeadModel.load(tmp_path).eval()
    assert (back.gain, back.bias, back.pooling) == (0.8, 0.3, "mean")
    items = [tokenize_prompt_response(tokenizer, r, text, 64) for r, text in zip(RECORDS, RESPONSES)]
    with torch.no_grad():
        before, after = (score_items(m, items, tokenizer.pad_token_id, "float32").tolist() for m in (model, back))
    assert after == before
    assert rlhfkit_scores(tmp_path) == pytest.approx(before, abs=1e-6)


def test_a_reward_model_scores_in_the_precision_auto_resolves_to(final, monkeypatch):
    """`rlhfkit label`'s and the demo's judges pass dtype=auto: it is measured (or cached) like a run's, not fp32."""
    from rlhfkit import rewards
    from rlhfkit.runtime import precision

    monkeypatch.setattr(precision, "probe", lambda model: {"float32": 2.0, "bfloat16": 1.0})  # no timing in tests
    precision_file = precision.cache_root() / "precision.json"
    monkeypatch.setattr(precision, "cache_root", lambda: precision_file.parent / "auto-reward-test")
    used = []
    monkeypatch.setattr(
        rewards, "score_items", lambda model, items, pad, dtype: used.append(dtype) or torch.zeros(len(items))
    )
    reward = model_reward(str(final), batch_size=4, dtype="auto")
    reward([r["prompt"] for r in RECORDS], RESPONSES, RECORDS)
    assert used == ["bfloat16"]
