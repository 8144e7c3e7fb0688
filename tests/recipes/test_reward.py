"""`rlhfkit rm` on the tiny model: last-token scoring, loss wiring per record kind, calibration, learning,
normalisation, exact resume, bad input."""

import json
import math
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.configs.reward import RMConfig
from rlhfkit.data.collate import tokenize_prompt_response
from rlhfkit.data.preferences import tokenize_preferences, unique_prompts
from rlhfkit.data.records import load_records
from rlhfkit.errors import UserError
from rlhfkit.models import ScalarHeadModel, load_backbone, load_tokenizer
from rlhfkit.recipes.reward import RewardModelTrainer
from rlhfkit.rewards import model_reward, score_items
from rlhfkit.rewards.calibration import calibration_bins, expected_calibration_error
from rlhfkit.runtime import Runtime, check_micro_batches
from rlhfkit.training.preferences import batch_loss_backward, preference_loss, reference_scores

POSITIVE = "good great happy love wonderful excellent nice best joy beautiful amazing kind fun glad".split()
NEGATIVE = "bad sad hate terrible awful worst ugly angry poor horrible pain boring".split()
TOPICS = "cat dog food movie book weather friend house music game work life water tree city day".split()


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny):
    tokenizer = load_tokenizer(tiny)
    torch.manual_seed(0)
    return ScalarHeadModel(load_backbone(tiny, tokenizer)), tokenizer


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory):
    """Positive answers chosen over negative ones: what the sentiment judge would say."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "comparisons.jsonl"
    rows = []
    for _ in range(80):
        topic = rng.choice(TOPICS)
        rows.append(
            {
                "prompt": f"tell me about the {topic}",
                "chosen": f"the {topic} is " + " ".join(rng.sample(POSITIVE, 3)),
                "rejected": f"the {topic} is " + " ".join(rng.sample(NEGATIVE, 3)),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alone(model, tokenizer, record, response):
    """The reward of one sequence scored by itself, no padding at all."""
    item = tokenize_prompt_response(tokenizer, record, response, 64)
    with torch.no_grad():
        return score_items(model, [item], tokenizer.pad_token_id, "float32").item()


@pytest.mark.parametrize("side", ["right", "left"])
def test_scores_are_read_at_the_last_real_token_with_either_padding(model_and_tokenizer, side):
    model, tokenizer = model_and_tokenizer
    record = {"prompt": "tell me a good day"}
    responses = [
        "good",
        "bad sad pain boring terrible",
        "the cat is happy",
    ]  # 2, 6, 5 tokens with EOS: padding differs per row
    items = [tokenize_prompt_response(tokenizer, record, r, 64) for r in responses]
    with torch.no_grad():
        batched = score_items(model, items, tokenizer.pad_token_id, "float32", side=side)
    expected = [alone(model, tokenizer, record, r) for r in responses]
    assert batched.tolist() == pytest.approx(expected, abs=1e-5)
    assert len(set(round(e, 4) for e in expected)) == 3  # the rows really differ, so a wrong index would show


@pytest.mark.parametrize("side", ["right", "left"])
def test_mean_pooling_averages_the_head_over_the_response_tokens(model_and_tokenizer, side):
    backbone_model, tokenizer = model_and_tokenizer
    model = ScalarHeadModel(backbone_model.backbone, gain=2.0, bias=0.5, pooling="mean")
    model.head.load_state_dict(backbone_model.head.state_dict())
    record = {"prompt": "tell me a good day"}
    responses = ["good", "bad sad pain boring terrible", "the cat is happy"]
    items = [tokenize_prompt_response(tokenizer, record, r, 64) for r in responses]
    with torch.no_grad():
        batched = score_items(model, items, tokenizer.pad_token_id, "float32", side=side)
        expected = []
        for (
            item
        ) in items:  # by hand: the head at every token of the unpadded sequence, averaged over the response and EOS
            ids = torch.tensor([item["input_ids"]])
            per_token = model.token_values(ids, torch.ones_like(ids, dtype=torch.bool))[0]
            response = torch.tensor(item["response_mask"])
            expected.append(2.0 * per_token[response].mean().item() + 0.5)
    assert batched.tolist() == pytest.approx(expected, abs=1e-5)
    last = [alone(backbone_model, tokenizer, record, r) for r in responses]
    assert expected != pytest.approx(last, abs=1e-3)  # a different reading than the last token's


def test_recipe_losses_match_hand_computation_for_each_record_kind(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    p = {"prompt": "tell me about the dog"}
    a, b, c = "good dog", "bad dog", "the dog"
    r = {x: alone(model, tokenizer, p, x) for x in (a, b, c)}

    def ls(x):  # log σ(x)
        return math.log(1 / (1 + math.exp(-x)))

    cases = {
        # Bradley-Terry with a margin of 0.5 on the first pair, none on the second: mean of -log σ(r_w - r_l - m)
        ("comparisons", "bradley_terry"): (
            [{**p, "chosen": a, "rejected": b, "margin": 0.5}, {**p, "chosen": c, "rejected": a}],
            (-ls(r[a] - r[b] - 0.5) - ls(r[c] - r[a])) / 2,
        ),
        # soft label 0.8: -(0.8 log σ(d) + 0.2 log σ(-d))
        ("comparisons", "soft_bradley_terry"): (
            [{**p, "chosen": a, "rejected": b, "label": 0.8}],
            -(0.8 * ls(r[a] - r[b]) + 0.2 * ls(r[b] - r[a])),
        ),
        # a 3-way ranking (3 pairs, weight 1/3) and a 2-way one in the same batch: mean of the two per-prompt losses
        ("rankings", "ranking"): (
            [{**p, "responses": [a, c, b]}, {**p, "responses": [b, c]}],
            (-(ls(r[a] - r[c]) + ls(r[a] - r[b]) + ls(r[c] - r[b])) / 3 - ls(r[b] - r[c])) / 2,
        ),
        # best of 3 is index 2: -log softmax(r)[2]
        ("choices", "best_of_k"): (
            [{**p, "responses": [a, b, c], "best": 2}],
            -(r[c] - math.log(math.exp(r[a]) + math.exp(r[b]) + math.exp(r[c]))),
        ),
    }
    for (kind, loss_name), (records, expected) in cases.items():
        tokenized, _ = tokenize_preferences(tokenizer, records, kind, 64)
        model.zero_grad()
        got = batch_loss_backward(
            model,
            tokenized,
            preference_loss(loss_name),
            tokenizer.pad_token_id,
            Runtime("float32"),
            micro_batch_size=1,
            total_records=len(tokenized),
        )
        assert got == pytest.approx(expected, abs=1e-5), kind
        assert model.head.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_calibration_bins_and_ece_by_hand():
    # p(winner) = 0.9, 0.9, 0.2, 0.65: confidences 0.9, 0.9, 0.8, 0.65; right, right, wrong, right.
    # bins of width 0.05 over [0.5, 1]: 0.65 -> bin 3 (acc 1, conf .65), 0.8 -> bin 6 (acc 0, conf .8),
    # 0.9 -> bin 8 (acc 1, conf .9)
    bins = calibration_bins(torch.tensor([0.9, 0.9, 0.2, 0.65]))
    assert [(b["count"], b["accuracy"]) for b in bins] == [(1, 1.0), (1, 0.0), (2, 1.0)]
    # ECE = 1/4 |1 - .65| + 1/4 |0 - .8| + 2/4 |1 - .9| = .0875 + .2 + .05
    assert expected_calibration_error(bins) == pytest.approx(0.3375, abs=1e-6)


def common(tiny, out, *extra):
    return [
        "--set",
        f"model.name={tiny}",
        "model.dtype=float32",
        "normalize.num_prompts=12",
        "normalize.generation.max_new_tokens=6",
        f"out={out}",
        *extra,
    ]


def test_rm_learns_held_out_preferences_and_normalises_against_the_reference(tiny, comparisons, tmp_path):
    out = tmp_path / "rm"
    settings = [f"data.train={comparisons}", "data.eval_fraction=0.25", "train.steps=25", "train.eval_every=25"]
    assert main(["rm", *common(tiny, out, *settings, "optim.learning_rate=0.003")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "comparisons" and summary["loss_function"] == "bradley_terry"
    assert summary["train_records"] == 60 and summary["eval_records"] == 20
    assert summary["eval_accuracy"] >= 0.9 and summary["eval_margin"] > 0
    assert (out / "reliability.png").is_file() and (out / "training.png").is_file()

    final = ScalarHeadModel.load(out / "final")
    meta = json.loads((out / "final" / "reward.json").read_text())
    assert (
        meta["gain"] == pytest.approx(1 / meta["reference_raw_std"])
        and meta["eval"]["eval_accuracy"] == summary["eval_accuracy"]
    )
    # The same reference responses (same seed), scored by the saved model with its gain and bias: mean 0, std 1.
    config = load_config(RMConfig, overrides=common(tiny, out)[1:])
    tokenizer = load_tokenizer(str(out / "final"))
    prompts = unique_prompts(load_records(comparisons, "comparisons")[:60], 12)
    scores = reference_scores(final, tokenizer, prompts, config, Runtime("float32"))
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-3) and scores.std().item() == pytest.approx(1.0, abs=1e-3)
    assert meta["reference_responses"] == 12


def test_rm_resume_after_a_stop_ends_bitwise_equal(tiny, comparisons, tmp_path):
    """Stopped after step 2 of 4 (the step-4 checkpoint and final/ gone); `--resume --out` alone finishes it."""
    args = [
        f"data.train={comparisons}",
        "data.max_length=24",
        "train.steps=4",
        "train.batch_size=6",
        "train.micro_batch_size=2",
        "train.checkpoint_every=2",
        "train.eval_every=2",
        "optim.learning_rate=0.003",
        "optim.schedule=linear",
        "normalize.num_prompts=4",
    ]
    assert main(["rm", *common(tiny, tmp_path / "straight", *args)]) == 0
    assert main(["rm", *common(tiny, tmp_path / "straight", *args)]) == 2  # refused: a run is there, no --resume
    stopped = tmp_path / "stopped"
    assert main(["rm", *common(tiny, stopped, *args)]) == 0
    config_before = (stopped / "config.yaml").read_text()
    shutil.rmtree(stopped / "checkpoints" / "step-4")  # as if killed during step 3
    shutil.rmtree(stopped / "final")
    assert main(["rm", "--resume", "--out", str(stopped)]) == 0  # the rest comes from the run's config.yaml
    assert (stopped / "config.yaml").read_text() == config_before
    weight_files = sorted(path.name for path in (tmp_path / "straight" / "final").glob("*.safetensors"))
    assert weight_files and weight_files == sorted(path.name for path in (stopped / "final").glob("*.safetensors"))
    for name in weight_files:  # backbone and head
        a, b = load_file(str(tmp_path / "straight" / "final" / name)), load_file(str(stopped / "final" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    straight, resumed = (
        json.loads((d / "final" / "reward.json").read_text()) for d in (tmp_path / "straight", stopped)
    )
    assert resumed == straight and resumed["reference_responses"] == 4  # the same normalisation and held-out figures
    metrics = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    assert [m["step"] for m in metrics if "eval/accuracy" in m] == [0, 2, 4]  # evaluated before the first step too


def test_processes_must_run_equal_numbers_of_micro_batches():
    check_micro_batches(batch_size=3, micro_batch_size=3, num_processes=2)  # 2 and 1 records, 1 pass each
    check_micro_batches(batch_size=8, micro_batch_size=2, num_processes=2)
    for batch_size, micro_batch_size in [(3, 1), (1, 1)]:  # 2 passes against 1; no record at all for one process
        with pytest.raises(UserError, match="unequal numbers of micro-batches"):
            check_micro_batches(batch_size, micro_batch_size, num_processes=2)


BAD = [
    (
        [{"prompt": "hi", "chosen": "good", "rejected": "good"}],
        [],
        "data.jsonl:1: 'chosen' and 'rejected' are the same text",
    ),
    ([{"prompt": "hi", "chosen": "good", "rejected": ""}], [], "data.jsonl:1: field 'rejected' is empty"),
    (
        [{"prompt": "hi", "responses": ["good"]}],
        [],
        "data.jsonl:1: field 'responses' has 1 response(s); at least 2 are needed",
    ),
    (
        [{"prompt": "hi", "chosen": "good", "rejected": "bad"}, {"prompt": "hi", "responses": ["good", "bad"]}],
        [],
        "data.jsonl:2: this looks like a rankings record",
    ),
    (
        [{"prompt": "hi", "responses": ["good", "bad"], "best": 0}, {"prompt": "hi", "responses": ["good", "bad"]}],
        [],
        "data.jsonl:2: this looks like a rankings record",
    ),
    (
        [{"prompt": "hi", "chosen": "good", "rejected": "bad"}] * 4,
        ["train.bogus=1"],
        "unknown config key 'train.bogus'",
    ),
    (
        [{"prompt": "hi", "chosen": "good", "rejected": "bad"}] * 4,
        ["train.batch_size=4", "train.micro_batch_size=3"],
        "train.batch_size 4 is not divisible by train.micro_batch_size 3",
    ),
    ([{"prompt": "hi"}], [], "a reward model trains on comparisons, rankings or choices"),
    (
        [{"prompt": "hi", "chosen": "good", "rejected": "bad"}] * 4,
        ["pooling=max"],
        "pooling must be one of last, mean, got 'max'",
    ),
]


@pytest.mark.parametrize("rows, settings, message", BAD)
def test_bad_input_exits_2_with_one_line_and_no_output(tiny, refused, rows, settings, message):
    assert message in refused("rm", rows, lambda out, data: common(tiny, out, data, *settings))


def test_lora_reward_model_is_merged_into_a_loadable_final(tiny, comparisons, tmp_path):
    """Through the Python API: RewardModelTrainer(config).train(out) returns what summary.json holds."""
    out = tmp_path / "lora"
    settings = [
        f"data.train={comparisons}",
        "train.steps=12",
        "optim.learning_rate=0.003",
        "model.lora.enabled=true",
        "model.lora.r=4",
        "normalize.enabled=false",
    ]
    summary = RewardModelTrainer(load_config(RMConfig, overrides=common(tiny, out, *settings)[1:])).train(out)
    assert json.loads((out / "summary.json").read_text()) == summary and summary["steps"] == 12
    merged, base = load_file(str(out / "final" / "model.safetensors")), load_file(f"{tiny}/model.safetensors")
    assert not (out / "final" / "adapter_config.json").exists()
    query = next(key for key in merged if key.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(merged[query], base["model.layers.0.self_attn.q_proj.weight"])
    # The merged final scores the held-out pairs as the trained (adapter) model did.
    final, tokenizer = ScalarHeadModel.load(out / "final"), load_tokenizer(str(out / "final"))
    held_out = load_records(comparisons, "comparisons")[-summary["eval_records"] :]
    tokenized, _ = tokenize_preferences(tokenizer, held_out, "comparisons", 256)
    with torch.no_grad():
        scores = score_items(
            final, [item for r in tokenized for item in r["items"]], tokenizer.pad_token_id, "float32"
        ).view(-1, 2)
    assert (scores[:, 0] > scores[:, 1]).float().mean().item() == pytest.approx(summary["eval_accuracy"])


def test_rankings_trained_model_is_measured_on_held_out_comparisons(tiny, comparisons, tmp_path):
    """Train on 3-way rankings, measure on comparisons of another kind: accuracy over their pairs, their own loss."""
    rng = random.Random(1)
    rankings = tmp_path / "rankings.jsonl"
    rows = []
    for _ in range(40):
        topic = rng.choice(TOPICS)
        best, middle, worst = (
            f"the {topic} is " + " ".join(rng.sample(words, 3))
            for words in (POSITIVE, POSITIVE[:4] + NEGATIVE[:4], NEGATIVE)
        )
        rows.append({"prompt": f"tell me about the {topic}", "responses": [best, middle, worst]})
    rankings.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    settings = [
        f"data.train={rankings}",
        f"data.eval={comparisons}",
        "train.steps=20",
        "train.batch_size=4",
        "train.eval_every=20",
        "optim.learning_rate=0.003",
        "normalize.enabled=false",
    ]
    assert main(["rm", *common(tiny, out, *settings)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "rankings" and summary["loss_function"] == "ranking"
    assert (
        summary["eval_records"] == 80 and summary["eval_pairs"] == 80
    )  # one pair per comparison, not three per ranking
    assert summary["eval_accuracy"] >= 0.9
    # the held-out loss is the comparisons' Bradley-Terry loss: -log σ(margin) averaged, so it stays below log 2
    # once accuracy is high
    assert 0 < summary["eval_loss"] < math.log(2)


def test_mean_pooled_reward_model_learns_and_scores_the_same_as_a_ppo_reward(tiny, comparisons, tmp_path):
    out = tmp_path / "mean"
    settings = [
        f"data.train={comparisons}",
        "data.eval_fraction=0.25",
        "pooling=mean",
        "train.steps=25",
        "train.eval_every=25",
        "optim.learning_rate=0.003",
    ]
    assert main(["rm", *common(tiny, out, *settings)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_accuracy"] >= 0.9
    assert json.loads((out / "final" / "reward.json").read_text())["pooling"] == "mean"
    # PPO's reward source loads it with its pooling and scores prompt + response as training tokenised them
    reward = model_reward(str(out / "final"), batch_size=3, dtype="float32")
    assert reward.model.pooling == "mean"
    held_out = load_records(comparisons, "comparisons")[-summary["eval_records"] :]
    records = [{"prompt": r["prompt"]} for r in held_out for _ in range(2)]
    responses = [text for r in held_out for text in (r["chosen"], r["rejected"])]
    scores = torch.tensor(reward([r["prompt"] for r in records], responses, records)).view(-1, 2)
    assert (scores[:, 0] > scores[:, 1]).float().mean().item() == pytest.approx(summary["eval_accuracy"])
