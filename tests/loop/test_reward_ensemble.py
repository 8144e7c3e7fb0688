"""The ensemble of reward heads: its mean is one head (so final/ loads anywhere), its spread the heads' std."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhfkit.config import ModelConfig
from rlhfkit.configs.common import ScheduleConfig
from rlhfkit.configs.loop import EnsembleRMConfig, LoopRewardModelConfig
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.loop import reward_model
from rlhfkit.loop.reward_model import EnsembleRewardTrainer
from rlhfkit.models import ScalarHeadModel, load_backbone, load_tokenizer
from rlhfkit.models.ensemble import EnsembleRewardModel
from rlhfkit.rewards import model_reward
from rlhfkit.rewards.ensemble import EnsembleReward
from rlhfkit.tracking import write_jsonl_atomic
from rlhfkit.training import optimizer_step

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


def test_micro_batches_of_rm_train_micro_batch_size_accumulate_the_whole_batchs_gradient(
    tiny_model_dir, tmp_path, monkeypatch
):
    comparisons = tmp_path / "comparisons.jsonl"
    write_jsonl_atomic(comparisons, [{"prompt": r["prompt"], "chosen": a, "rejected": b} for r, a, b in
                                     zip(RECORDS, RESPONSES, RESPONSES[1:] + RESPONSES[:1])])  # fmt: skip
    gradients = []

    def capture(params, *rest):  # the gradient the optimiser step receives
        gradients.append([p.grad.clone() for p in params])
        return optimizer_step(params, *rest)

    monkeypatch.setattr(reward_model, "optimizer_step", capture)

    def one_step(micro_batch_size):
        schedule = ScheduleConfig(steps=1, batch_size=4, micro_batch_size=micro_batch_size)
        settings = LoopRewardModelConfig(ensemble_size=2, train=schedule)
        config = EnsembleRMConfig(
            ModelConfig(tiny_model_dir, "float32"), str(comparisons), str(comparisons), rm=settings
        )
        torch.manual_seed(0)
        return EnsembleRewardTrainer(config, ([], [])).train_step()[0]

    whole, micro = one_step(0), one_step(1)
    assert micro["train/loss"] == pytest.approx(whole["train/loss"], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-7, rtol=1e-4) for a, b in zip(*gradients))
    assert max(g.abs().max() for g in gradients[0]) > 1e-4  # a real gradient, not zeros on both sides
