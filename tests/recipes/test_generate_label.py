"""`rlhfkit generate` and `rlhfkit label`: candidates records, judge labelling, ties, Bradley-Terry label noise."""

import json
import math
import random

import pytest

from rlhfkit.cli import main
from rlhfkit.config import RewardConfig
from rlhfkit.configs.label import LabelConfig, LabelDataConfig
from rlhfkit.data.records import load_records
from rlhfkit.labeling.synthetic import label_record, noisy_order, prefer_first
from rlhfkit.recipes.generate import candidates_record
from rlhfkit.recipes.label import label


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_writes_k_responses_per_prompt_keeping_the_prompt_record(tiny_model_dir, tmp_path):
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"prompt": "tell me a good day", "reference": "a good day"},
            {"messages": [{"role": "user", "content": "say hi"}], "id": 7},
            {"prompt": "what now"},
        ],
    )
    out = tmp_path / "gen"
    args = [
        "generate",
        "--set",
        f"model.name={tiny_model_dir}",
        f"data.prompts={prompts}",
        "num_responses=3",
        "batch_size=2",
        "generation.max_new_tokens=6",
        f"out={out}",
    ]
    assert main(args) == 0
    records = load_records(out / "candidates.jsonl", "candidates")
    summary = json.loads((out / "summary.json").read_text())
    assert [len(r["responses"]) for r in records] == [3, 3, 3] and summary["responses"] == 9
    assert (
        records[0]["reference"] == "a good day"
        and records[1]["id"] == 7
        and records[1]["messages"][0]["content"] == "say hi"
    )
    assert all(len(response.split()) <= 6 for r in records for response in r["responses"])
    assert main(args) == 2  # never overwrites an earlier result


def test_empty_responses_are_left_out_of_candidates():
    assert candidates_record({"prompt": "p", "x": 1}, ["good", " ", "", "bad"]) == {
        "prompt": "p",
        "x": 1,
        "responses": ["good", "bad"],
    }


def test_prefer_first_without_noise_and_ties():
    rng = random.Random(0)
    assert prefer_first(0.5, 0.2, 0.0, rng) is True
    assert prefer_first(0.2, 0.5, 0.0, rng) is False
    assert prefer_first(0.3, 0.3, 0.0, rng) is None
    assert noisy_order([0.1, 0.9, 0.5], 0.0, rng) == [1, 2, 0]
    assert noisy_order([0.1, 0.9, 0.1], 0.0, rng) is None


def test_label_noise_follows_bradley_terry_with_temperature():
    # P(a ≻ b) = σ((s_a - s_b)/T): Δ = 1, T = 0.5 -> σ(2) = 0.8808; 20000 draws have std 0.0023
    rng = random.Random(1)
    draws = 20000
    share = sum(prefer_first(1.0, 0.0, 0.5, rng) for _ in range(draws)) / draws
    assert share == pytest.approx(1 / (1 + math.exp(-2)), abs=0.01)
    # K = 2 rankings and choices follow the same law (Plackett-Luce / Gumbel-max)
    first = sum(noisy_order([1.0, 0.0], 0.5, rng)[0] == 0 for _ in range(draws)) / draws
    assert first == pytest.approx(1 / (1 + math.exp(-2)), abs=0.01)
    # K = 3 choice: softmax(s / T) of s = (0, 1, 2), T = 1 -> p(best = 2) = e² / (1 + e + e²) = 0.6652
    best = sum(noisy_order([0.0, 1.0, 2.0], 1.0, rng)[0] == 2 for _ in range(draws)) / draws
    assert best == pytest.approx(math.exp(2) / (1 + math.e + math.exp(2)), abs=0.01)


def test_label_record_keeps_prompt_fields_and_orders_by_score():
    record = {"prompt": "p", "reference": "r", "responses": ["a", "b", "c"]}
    comparisons, ties = label_record(record, [1.0, 3.0, 1.0], "comparisons", 0.0, "length", random.Random(0))
    # pairs (a, b): b wins; (a, c): tie, skipped; (b, c): b wins
    assert [(c["chosen"], c["rejected"]) for c in comparisons] == [("b", "a"), ("b", "c")] and ties == 1
    assert comparisons[0]["reference"] == "r" and comparisons[0]["meta"] == {"judge": "length", "scores": [3.0, 1.0]}


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    """A user judge: the number of times 'good' occurs."""
    (tmp_path / "goodcount.py").write_text(
        "def judge(prompts, responses, records):\n    return [r.split().count('good') for r in responses]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "goodcount:judge"


CANDIDATES = [
    {
        "prompt": "p1",
        "reference": "r",
        "responses": ["good good", "good", "bad", "good"],
    },  # duplicate "good" merged; scores 2, 1, 0
    {"prompt": "p2", "responses": ["bad", "sad"]},  # scores 0, 0: a tie
    {"prompt": "p3", "responses": ["good"]},  # a single response: nothing to compare
]


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (
            "comparisons",
            [
                {"prompt": "p1", "reference": "r", "chosen": "good good", "rejected": "good"},
                {"prompt": "p1", "reference": "r", "chosen": "good good", "rejected": "bad"},
                {"prompt": "p1", "reference": "r", "chosen": "good", "rejected": "bad"},
            ],
        ),
        ("rankings", [{"prompt": "p1", "reference": "r", "responses": ["good good", "good", "bad"]}]),
        ("choices", [{"prompt": "p1", "reference": "r", "responses": ["good good", "good", "bad"], "best": 0}]),
    ],
)
def test_label_cli_with_a_function_judge(tmp_path, judge_module, fmt, expected):
    candidates = write_jsonl(tmp_path / "candidates.jsonl", CANDIDATES)
    out = tmp_path / "labels"
    assert (
        main(
            [
                "label",
                "--judge",
                "function",
                "--format",
                fmt,
                "--set",
                f"reward.function={judge_module}",
                f"data.train={candidates}",
                f"out={out}",
            ]
        )
        == 0
    )
    records = load_records(out / f"{fmt}.jsonl", fmt)
    assert [{k: v for k, v in r.items() if k != "meta"} for r in records] == expected
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["ties_skipped"] == 1
        and summary["prompts_with_fewer_than_2_distinct_responses"] == 1
        and summary["records"] == len(expected)
    )


def test_label_bad_input_exits_2_without_output(tmp_path, judge_module, capsys):
    comparisons = write_jsonl(tmp_path / "cmp.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    out = tmp_path / "never"
    assert main(["label", "--judge", "sentiment", "--set", f"data.train={comparisons}", f"out={out}"]) == 2
    assert "cmp.jsonl:1: this looks like a comparisons record" in capsys.readouterr().err
    ties = write_jsonl(tmp_path / "ties.jsonl", [{"prompt": "p", "responses": ["bad", "sad"]}])
    assert (
        main(
            [
                "label",
                "--judge",
                "function",
                "--set",
                f"reward.function={judge_module}",
                f"data.train={ties}",
                f"out={out}",
            ]
        )
        == 2
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # the rest is the progress bar
    assert len(errors) == 1 and "produced no comparisons (1 tied" in errors[0]
    assert not out.exists()


def test_label_api_returns_its_file_and_a_finished_run_is_never_overwritten(tmp_path, judge_module, capsys):
    candidates = write_jsonl(tmp_path / "candidates.jsonl", CANDIDATES)
    out = tmp_path / "labels"
    reward = RewardConfig(kind="function", function=judge_module)
    path = label(LabelConfig(data=LabelDataConfig(train=str(candidates)), reward=reward, out=str(out)))
    assert path == out / "comparisons.jsonl" and len(load_records(path, "comparisons")) == 3
    summary = (out / "summary.json").read_text()
    # another format into the same directory would overwrite its summary.json and config.yaml: refused
    rerun = ["label", "--judge", "function", "--format", "rankings", "--set", f"reward.function={judge_module}"]
    capsys.readouterr()
    assert main([*rerun, f"data.train={candidates}", f"out={out}"]) == 2
    assert f"{out} already holds a finished label run" in capsys.readouterr().err
    assert not (out / "rankings.jsonl").exists() and (out / "summary.json").read_text() == summary
