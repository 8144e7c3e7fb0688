"""generate -> label -> rm -> ppo on the tiny model, through the CLI, each stage reading the last one's output."""

import json

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rewards import model_reward


def test_generate_label_rm_ppo_round_trip(tmp_path):
    tiny = str(build_tiny_model(tmp_path / "tiny"))
    assert (
        main(
            [
                "generate",
                "--set",
                f"model.name={tiny}",
                "data.limit=24",
                "num_responses=4",
                "batch_size=12",
                "generation.max_new_tokens=8",
                f"out={tmp_path / 'gen'}",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "label",
                "--judge",
                "sentiment",
                "--set",
                f"data.train={tmp_path / 'gen' / 'candidates.jsonl'}",
                f"out={tmp_path / 'label'}",
            ]
        )
        == 0
    )
    label_summary = json.loads((tmp_path / "label" / "summary.json").read_text())
    assert label_summary["records"] > 24  # up to 6 pairs per prompt, less the sentiment ties
    rm = tmp_path / "rm"
    assert (
        main(
            [
                "rm",
                "--set",
                f"model.name={tiny}",
                "model.dtype=float32",
                f"data.train={tmp_path / 'label' / 'comparisons.jsonl'}",
                "train.steps=6",
                "train.batch_size=8",
                "optim.learning_rate=0.003",
                "normalize.num_prompts=8",
                "normalize.generation.max_new_tokens=8",
                f"out={rm}",
            ]
        )
        == 0
    )
    ppo = tmp_path / "ppo"
    code = main(
        [
            "ppo",
            "--set",
            f"model.name={tiny}",
            "model.dtype=float32",
            "reward.kind=model",
            f"reward.model={rm / 'final'}",
            "train.steps=2",
            "train.batch_size=4",
            "train.mini_batch_size=2",
            "generation.max_new_tokens=8",
            f"out={ppo}",
        ]
    )
    assert code == 0
    # PPO's logged scores are the reward model's: rescore the logged (prompt, response) pairs independently.
    samples = [json.loads(line) for line in (ppo / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8
    score = model_reward(str(rm / "final"), batch_size=4, dtype="float32")
    expected = score(
        [s["prompt"] for s in samples], [s["response"] for s in samples], [{"prompt": s["prompt"]} for s in samples]
    )
    assert [s["score"] for s in samples] == pytest.approx(expected, abs=1e-4)
    assert torch.tensor(expected).std() > 0  # the reward model tells responses apart
