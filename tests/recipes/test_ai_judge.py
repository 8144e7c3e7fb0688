"""The AI judge: option probabilities read from next-token logits, both orders averaged; the constitution loader."""

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlhfkit.cli import main
from rlhfkit.data import load_records
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rewards.ai_judge import (
    JudgeConfig,
    Principle,
    ai_comparisons,
    choice_prompt,
    first_option_probabilities,
    judge_pairs,
    option_token_ids,
    position_bias,
)

LABELS = ["yes", "no"]  # the tiny word-level vocabulary has no "A"/"B"
PRINCIPLE = Principle(name="positive", critique="c", revision="r", preference="positive")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=32, num_layers=2)
    tokenizer = load_tokenizer(str(directory))
    return load_causal_lm(str(directory), tokenizer).eval(), tokenizer


class GoodBeforeBadJudge(nn.Module):
    """A fake judge: logit(first label) = +1 if 'good' comes before 'bad' in the input, else -1; plus 0.5 position bias.

    logit(second label) = 0 and every other token -inf, so P(first label) = sigmoid(logit).
    """

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.good, self.bad = tokenizer.convert_tokens_to_ids(["good", "bad"])
        self.first, self.second = option_token_ids(tokenizer, LABELS)
        self.vocab = len(tokenizer)

    def forward(self, input_ids, attention_mask, position_ids):
        logits = torch.full((*input_ids.shape, self.vocab), -1e9)
        for row, ids in enumerate(input_ids.tolist()):
            good_first = ids.index(self.good) < ids.index(self.bad)
            logits[row, -1, self.first] = (1.0 if good_first else -1.0) + 0.5
            logits[row, -1, self.second] = 0.0
        return SimpleNamespace(logits=logits)


def test_both_orders_cancel_a_pure_position_bias(tiny):
    _, tokenizer = tiny

    class AlwaysFirst(GoodBeforeBadJudge):
        def forward(self, input_ids, attention_mask, position_ids):
            logits = torch.full((*input_ids.shape, self.vocab), -1e9)
            logits[:, -1, self.first] = math.log(3.0)  # P(first label) = 3 / (3 + 1) = 0.75 whatever is shown
            logits[:, -1, self.second] = 0.0
            return SimpleNamespace(logits=logits)

    verdict = judge_pairs(
        AlwaysFirst(tokenizer),
        tokenizer,
        [{"prompt": "say"}],
        ["good day"],
        ["bad day"],
        ["positive"],
        LABELS,
        "float32",
        4,
    )
    # shown first: x is option 1, P = 0.75; shown second: x is option 2, P(x) = 1 - 0.75 = 0.25; average 0.5
    assert verdict.shown_first.tolist() == pytest.approx([0.75], abs=1e-6)
    assert verdict.shown_second.tolist() == pytest.approx([0.25], abs=1e-6)
    assert verdict.prob_first.tolist() == pytest.approx([0.5], abs=1e-6)


def test_ai_comparisons_soft_labels_by_hand(tiny):
    _, tokenizer = tiny
    judge = GoodBeforeBadJudge(tokenizer)
    records = [{"prompt": "tell me"}, {"prompt": "tell me"}]
    firsts, seconds = ["good day", "bad day"], ["bad day", "good day"]
    comparisons = ai_comparisons(
        judge, tokenizer, records, firsts, seconds, [PRINCIPLE], JudgeConfig(labels=LABELS), "float32", random.Random(0)
    )
    # pair 0 (x = good): shown first logit 1 + 0.5 -> sigmoid(1.5) = 0.8175745; shown second: the
    # first option is 'bad', logit -1 + 0.5 -> P(option 1) = sigmoid(-0.5), so P(x) = sigmoid(0.5) = 0.6224593.
    # average 0.7200169: 'good day' is chosen with label 0.7200169. Pair 1 (x = bad) is the mirror
    # image: x shown first has logit -0.5 -> sigmoid(-0.5) = 0.3775407, and again 'good day' wins.
    for comparison, x_first in zip(comparisons, (0.8175745, 0.3775407)):
        assert comparison["chosen"] == "good day" and comparison["rejected"] == "bad day"
        assert comparison["label"] == pytest.approx(0.7200169, abs=1e-6)
        assert comparison["meta"]["p_first_shown_first"] == pytest.approx(x_first, abs=1e-6)
        assert comparison["meta"]["principle"] == "positive"
        assert comparison["prompt"] == "tell me"


def test_batched_probabilities_equal_one_text_at_a_time(tiny):
    model, tokenizer = tiny
    records = [
        {"prompt": "tell me about the cat"},
        {"prompt": "a dog"},
        {"prompt": "what do you think of the city today"},
    ]
    texts = [choice_prompt(tokenizer, r, "good fun", "sad day and bad", "kind", LABELS) for r in records]
    ids = option_token_ids(tokenizer, LABELS)
    batched = first_option_probabilities(model, tokenizer, texts, ids, "float32", batch_size=2)
    naive = []
    with torch.no_grad():
        for text in texts:  # no padding, full-vocabulary softmax, then renormalised over the two labels
            input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
            probs = torch.softmax(model(input_ids=input_ids).logits[0, -1].double(), dim=-1)
            naive.append((probs[ids[0]] / (probs[ids[0]] + probs[ids[1]])).item())
    assert batched.tolist() == pytest.approx(naive, abs=1e-5)
    assert not torch.allclose(batched, torch.full_like(batched, 0.5))  # the question matters to the model at all


def test_labels_must_be_single_known_tokens(tiny):
    _, tokenizer = tiny
    with pytest.raises(UserError, match="judge.labels"):
        option_token_ids(tokenizer, ["A", "B"])  # both unknown to the word-level vocabulary
    with pytest.raises(UserError, match="two different labels"):
        JudgeConfig(labels=["A", "A"])


def test_embedded_tokenizer_labels_are_single_tokens():
    tokenizer = load_tokenizer("embedded:smollm2-135m-instruct")
    a, b = option_token_ids(tokenizer, ["A", "B"])
    assert tokenizer.convert_ids_to_tokens([a, b]) == ["A", "B"]


def test_position_bias_by_hand():
    # P(x wins) shown first / shown second: (0.9, 0.8) both pick x; (0.6, 0.3) picks x first, y second;
    # (0.2, 0.4) both pick y. The option shown first wins in pair 1 once of two, in pair 2 twice
    # (x first, then y first), in pair 3 once: 4 of 6. Both orders agree in pairs 1 and 3: 2 of 3.
    comparisons = [
        {"meta": {"p_first_shown_first": a, "p_first_shown_second": b}} for a, b in ((0.9, 0.8), (0.6, 0.3), (0.2, 0.4))
    ]
    assert position_bias(comparisons) == pytest.approx({"first_shown_wins": 4 / 6, "orders_agree": 2 / 3})


def test_label_judge_ai_command_compares_every_pair(tiny_model_dir, tmp_path, capsys):
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(
        '{"prompt": "tell me", "responses": ["good day", "bad day", "the cat", "good day"]}\n'
        '{"prompt": "say", "responses": ["a", "b"]}\n'
    )
    sets = [
        "--set",
        f"data.train={candidates}",
        "--set",
        f"model.name={tiny_model_dir}",
        "--set",
        "model.dtype=float32",
        "--set",
        "judge.labels=this,that",
    ]
    assert main(["label", "--judge", "ai", "--format", "rankings", "--out", str(tmp_path / "x"), *sets]) == 2
    assert "writes comparisons" in capsys.readouterr().err
    out = tmp_path / "label"
    assert main(["label", "--judge", "ai", "--out", str(out), *sets]) == 0
    comparisons = load_records(out / "comparisons.jsonl", "comparisons")
    # 3 distinct responses -> 3 pairs, plus 1 pair: 4 comparisons, each with P(chosen) >= 0.5
    assert len(comparisons) == 4
    assert {frozenset((c["chosen"], c["rejected"])) for c in comparisons[:3]} == {
        frozenset(p) for p in [("good day", "bad day"), ("good day", "the cat"), ("bad day", "the cat")]
    }
    for c in comparisons:
        p_first = (c["meta"]["p_first_shown_first"] + c["meta"]["p_first_shown_second"]) / 2
        assert c["label"] == pytest.approx(max(p_first, 1 - p_first), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == "ai" and summary["records"] == 4
    assert summary["first_shown_wins"] == pytest.approx(position_bias(comparisons)["first_shown_wins"])
