"""The whole RLAIF chain through the CLI on a tiny model.

Constitution SL -> SFT -> candidates -> AI labels -> RM -> PPO.
"""

import json

from rlhfkit.cli import main
from rlhfkit.data import load_records


def sets(*pairs):
    return sum((["--set", p] for p in pairs), [])


def test_rlaif_chain_end_to_end(tiny_model_dir, tmp_path):
    common = [f"model.name={tiny_model_dir}", "model.dtype=float32"]
    sl, sft, gen, lab, rm, ppo = (tmp_path / name for name in ("sl", "sft", "gen", "label", "rm", "ppo"))

    # 1. supervised stage of Constitutional AI: critique, revise, keep the revisions
    assert (
        main(
            [
                "constitution",
                "--out",
                str(sl),
                *sets(*common, "data.limit=8", "critique.batch_size=4", "generation.max_new_tokens=6"),
            ]
        )
        == 0
    )
    demonstrations = load_records(sl / "demonstrations.jsonl", "demonstrations")
    assert len(demonstrations) >= 4

    # 2. SFT on the revisions
    assert (
        main(
            [
                "sft",
                "--out",
                str(sft),
                *sets(
                    *common,
                    f"data.train={sl / 'demonstrations.jsonl'}",
                    "train.steps=2",
                    "train.batch_size=2",
                    "train.eval_samples=0",
                ),
            ]
        )
        == 0
    )
    policy = str(sft / "final")

    # 3. candidates from the SFT policy, 4. labelled by the AI judge (the policy itself) with soft labels
    assert (
        main(
            [
                "generate",
                "--out",
                str(gen),
                *sets(
                    f"model.name={policy}",
                    "model.dtype=float32",
                    "data.limit=6",
                    "num_responses=3",
                    "generation.max_new_tokens=6",
                ),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "label",
                "--judge",
                "ai",
                "--out",
                str(lab),
                *sets(
                    f"data.train={gen / 'candidates.jsonl'}",
                    f"model.name={policy}",
                    "model.dtype=float32",
                    "judge.labels=this,that",
                ),
            ]
        )
        == 0
    )
    comparisons = load_records(lab / "comparisons.jsonl", "comparisons")
    assert comparisons and all(0.5 <= c["label"] <= 1 and c["meta"]["judge"] == "ai" for c in comparisons)
    summary = json.loads((lab / "summary.json").read_text())
    assert summary["records"] == len(comparisons) and 0 <= summary["first_shown_wins"] <= 1

    # 5. a reward model on the soft labels, 6. PPO against it
    assert (
        main(
            [
                "rm",
                "--out",
                str(rm),
                *sets(
                    f"model.name={policy}",
                    "model.dtype=float32",
                    f"data.train={lab / 'comparisons.jsonl'}",
                    "train.steps=2",
                    "train.batch_size=2",
                    "normalize.num_prompts=4",
                    "normalize.generation.max_new_tokens=6",
                ),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "ppo",
                "--out",
                str(ppo),
                *sets(
                    f"model.name={policy}",
                    "model.dtype=float32",
                    "reward.kind=model",
                    f"reward.model={rm / 'final'}",
                    "train.steps=2",
                    "train.batch_size=4",
                    "train.mini_batch_size=2",
                    "generation.max_new_tokens=8",
                ),
            ]
        )
        == 0
    )
    metrics = [json.loads(line) for line in (ppo / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    # the PPO scores come from the AI-feedback reward model: finite and not all identical
    scores = [json.loads(line)["score"] for line in (ppo / "samples.jsonl").read_text().splitlines()]
    assert len(scores) >= 4 and len(set(scores)) > 1
