"""The ensemble of reward heads: its mean is one head (so final/ loads anywhere), its spread the heads' std."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.models import ScalarHeadModel, load_backbone, load_tokenizer
from rlhfkit.models.ensemble import EnsembleRewardModel
from rlhfkit.rewards import model_reward
from rlhfkit.rewards.ensemble import EnsembleReward

RECORDS = [{"prompt": "tell me about the cat"}, {"prompt": "what is the weather like today"}] * 2
RESPONSES = ["the cat is very happy", "bad", "it is a beautiful day and i love it", "terrible awful pain"]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_saved_ensemble_loads_as_itself_as_a_reward_model_and_in_plain_transformers(tiny_model_dir, tmp_path, pooling):
    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    model = EnsembleRewardModel(load_backbone(tiny_model_dir, tokenizer), 3, gain=2.0, bias=0.5, pooling=pooling)
    torch.nn.init.normal_(model.heads.bias)
    model.eval()
    items = [tokenize_prompt_response(tokenizer, r, text, 256) for r, text in zip(RECORDS, RESPONSES)]
    input_ids, attention_mask, response_mask = pad_batch(items, tokenizer.pad_token_id)
    with torch.no_grad():
        heads = model.head_scores(input_ids, attention_mask, response_mask)  # (4, 3)
        for e in range(3):  # head e alone, as a one-head reward model, scores column e
            single = ScalarHeadModel(model.backbone, gain=2.0, bias=0.5, pooling=pooling)
            single.head.weight.copy_(model.heads.weight[e : e + 1])
            single.head.bias.copy_(model.heads.bias[e : e + 1])
            assert single(input_ids, attention_mask, response_mask).tolist() == pytest.approx(
                heads[:, e].tolist(), abs=1e-6
            )
    mean = heads.mean(-1).tolist()
    assert heads.std(-1).min() > 1e-3  # the heads really differ

    model.save(tmp_path, tokenizer, {"spread_range": [0.1, 0.9]})
    meta = json.loads((tmp_path / "reward.json").read_text())
    assert meta["spread_range"] == [0.1, 0.9] and meta["ensemble_size"] == 3
    with torch.no_grad():
        again = EnsembleRewardModel.load(tmp_path).eval().head_scores(input_ids, attention_mask, response_mask)
    assert again.tolist() == [pytest.approx(row, abs=1e-5) for row in heads.tolist()]
    reward = model_reward(str(tmp_path), batch_size=2, dtype="float32")  # `reward.kind=model`: the mean
    assert reward([r["prompt"] for r in RECORDS], RESPONSES, RECORDS) == pytest.approx(mean, abs=1e-5)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = plain(input_ids=input_ids, attention_mask=attention_mask.long(), response_mask=response_mask).logits
    assert logits[:, 0].tolist() == pytest.approx(mean, abs=1e-4)

    ensemble = EnsembleReward(EnsembleRewardModel.load(tmp_path), tokenizer, batch_size=3)
    assert ensemble([r["prompt"] for r in RECORDS], RESPONSES, RECORDS) == pytest.approx(mean, abs=1e-5)
    population_std = [((sum((x - sum(row) / 3) ** 2 for x in row)) / 3) ** 0.5 for row in heads.tolist()]
    assert ensemble.last_spread == pytest.approx(population_std, abs=1e-5)
