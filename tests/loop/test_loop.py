"""`rlhfkit loop` through the CLI on the tiny model: the summary contract, the ensemble's traces, an exact resume."""

from __future__ import annotations

import json
import socket

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.configs.loop import LoopConfig
from rlhfkit.loop.labels import JudgeLabeller
from rlhfkit.loop.policy import ppo_config
from rlhfkit.loop.rounds import OnlineLoop
from rlhfkit.tracking import read_jsonl

QUICK = [
    "model.dtype=float32", "loop.rounds=2", "loop.labels_per_round=4", "loop.candidates_per_round=8",
    "loop.ppo_iterations=1", "train.batch_size=4", "train.ppo_epochs=1", "model.lora.top_layers=1", "rm.train.steps=4",
    "rm.train.batch_size=4", "rm.ensemble_size=3", "data.num_eval_prompts=6", "generation.max_new_tokens=6",
]  # fmt: skip


def run_loop(out, model, *extra):
    return main(["loop", "--judge", "sentiment", "--out", str(out), "--set", f"model.name={model}", *QUICK, *extra])


def labels_of(out):
    return [read_jsonl(out / f"round-{k}" / "labels.jsonl") for k in (1, 2)]


def test_loop_writes_the_round_contract_and_continues_exactly_after_an_interrupt(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run_loop(straight, tiny_model_dir) == 0
    summary = json.loads((straight / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [r["labels"] for r in rounds] == [4, 8]  # every label so far: the reward model retrains on all of them
    assert all(0 <= r["reward_model_accuracy"] <= 1 and -1 <= r["gold_score"] <= 1 for r in rounds)
    assert [r["selection"] for r in rounds] == ["random", "ensemble"]  # round 1 has no reward model to ask
    assert rounds[1]["disagreement_chosen"] >= rounds[1]["disagreement_candidates"]
    assert summary["heldout_pairs"] >= 1 and summary["label_budget"] == 8
    reward = json.loads((straight / "round-2" / "rm" / "final" / "reward.json").read_text())
    low, high = reward["spread_range"]
    assert 0 <= low <= high and reward["ensemble_size"] == 3
    metrics = read_jsonl(straight / "ppo" / "metrics.jsonl")
    assert [m["step"] for m in metrics if "reward/spread" in m] == [1, 2]  # PPO went on from round 1's policy
    assert "rlhfkit loop: 2 round(s), 8 labels" in capsys.readouterr().out

    # a rerun with other settings would mix two loops: refused before anything loads
    assert run_loop(straight, tiny_model_dir, "rm.train.steps=5") == 2
    assert "rm.train.steps=4, not 5" in capsys.readouterr().err

    # Ctrl-C in round 2's PPO, after its labels and reward model; then the same command again
    continue_ppo = OnlineLoop.continue_ppo

    def stop_in_round_two(self, round_number):
        if round_number == 2:
            raise KeyboardInterrupt
        return continue_ppo(self, round_number)

    monkeypatch.setattr(OnlineLoop, "continue_ppo", stop_in_round_two)
    assert run_loop(interrupted, tiny_model_dir) == 130
    assert "interrupted; rerun the same command to continue" in capsys.readouterr().err
    assert len(json.loads((interrupted / "summary.json").read_text())["rounds"]) == 1
    monkeypatch.setattr(OnlineLoop, "continue_ppo", continue_ppo)
    relabelled = []
    label = JudgeLabeller.label
    monkeypatch.setattr(JudgeLabeller, "label", lambda self, n, pairs: relabelled.append(n) or label(self, n, pairs))
    assert run_loop(interrupted, tiny_model_dir) == 0
    assert relabelled == []  # every label was on disk already
    assert labels_of(interrupted) == labels_of(straight)
    assert json.loads((interrupted / "summary.json").read_text())["rounds"] == rounds


def test_bad_settings_and_an_unreachable_server_are_one_line_and_leave_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["loop", "--out", str(out), "--set", "loop.selection=best"]) == 2
    assert "loop.selection must be one of ensemble, random, got 'best'" in capsys.readouterr().err
    missing = tmp_path / "missing.jsonl"
    assert main(["loop", "--out", str(out), "--set", f"data.prompts={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    assert main(["loop", "--server", f"http://127.0.0.1:{port}", "--token", "t", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"cannot reach the labelling server at http://127.0.0.1:{port}" in error and len(error.splitlines()) == 1
    assert not out.exists()
    assert main(["loop", "--server", "http://127.0.0.1:1", "--out", str(out)]) == 2
    assert "--server needs an admin's token" in capsys.readouterr().err


def test_the_loops_first_key_names_are_refused_naming_rlhfkit_ppo_and_rm_keys(tmp_path, capsys):
    out, config_file = tmp_path / "run", tmp_path / "loop.yaml"
    assert main(["loop", "--out", str(out), "--set", "ppo.kl_coef=0.1"]) == 2
    assert capsys.readouterr().err.strip() == "rlhfkit loop: error: --set: config key 'ppo.kl_coef' is now 'kl.coef'"
    config_file.write_text("rm:\n  learning_rate: 0.001\n")
    assert main(["loop", "--out", str(out), "--config", str(config_file)]) == 2
    assert f"config file {config_file}: config key 'rm.learning_rate' is now 'rm.optim.learning_rate'" in (
        capsys.readouterr().err
    )
    assert main(["loop", "--out", str(out), "--set", "rm.train.steps=0"]) == 2  # rlhfkit rm's section, named in full
    assert "rm.train.steps must be positive, got 0" in capsys.readouterr().err
    assert main(["loop", "--out", str(out), "--set", "train.mini_batch_size=5"]) == 2  # PPO's check, before any write
    assert "train.batch_size 16 is not divisible by train.mini_batch_size 5" in capsys.readouterr().err
    assert not out.exists()


def test_the_policys_ppo_keys_reach_its_ppo_run_as_rlhfkit_ppo_reads_them(tmp_path):
    overrides = ["train.batch_size=8", "train.mini_batch_size=4", "optim.weight_decay=0.1", "kl.adaptive=true"]
    config = load_config(LoopConfig, overrides=[*overrides, "loop.rounds=2", "loop.ppo_iterations=3"])
    ppo = ppo_config(config, tmp_path / "rm", tmp_path / "ppo")
    assert (ppo.train.batch_size, ppo.mini_batch_size, ppo.train.ppo_epochs) == (8, 4, 2)
    assert (ppo.train.steps, ppo.train.checkpoint_every) == (6, 3)  # the rounds' iterations, a checkpoint per round
    assert (ppo.optim.learning_rate, ppo.optim.weight_decay, ppo.optim.keep_moments) == (3e-4, 0.1, True)
    assert (ppo.kl.coef, ppo.kl.adaptive) == (0.05, True)


def test_an_ai_judge_labels_the_rounds_with_soft_labels(tmp_path, tiny_model_dir):
    out = tmp_path / "ai"
    settings = ["loop.rounds=1", "loop.labels_per_round=3", "labels.ai.labels=this,that"]
    assert (
        main(["loop", "--judge", "ai", "--out", str(out), "--set", f"model.name={tiny_model_dir}", *QUICK, *settings])
        == 0
    )
    labels = read_jsonl(out / "round-1" / "labels.jsonl")
    assert len(labels) == 3 and all(0.5 <= label["label"] <= 1 and label["meta"]["judge"] == "ai" for label in labels)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels_source"] == "ai" and summary["rounds"][0]["labels"] == 3
