"""The reward-hacking monitor in `rlhfkit loop`: it watches every round's PPO and a stop ends the loop after that round.

The monitor's gold judge is scripted (one call per evaluation, as in tests/test_monitor_ppo.py): it
rises, then falls below its start by more than monitor.gold_tolerance in round 2's first iteration;
monitor.action=rollback leaves the policy of its best evaluation (iteration 1) as the loop's policy.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from test_loop import QUICK

from rlhfkit.checkpoint import latest_checkpoint, load_checkpoint
from rlhfkit.cli import main
from rlhfkit.config import RewardConfig
from rlhfkit.configs.loop import LoopConfig
from rlhfkit.loop.policy import ppo_config
from rlhfkit.rewards.hacking import Evaluation, over_optimisation
from rlhfkit.tracking import read_jsonl

GOLD = [0.5, 0.6, 0.45, 0.2, 0.2, 0.2, 0.2, 0.2]  # the gold judge at evaluation 0, 1, ... (one per PPO iteration)
SCRIPT = f"""
from pathlib import Path

GOLD = {GOLD}
CALLS = Path("gold_calls.txt")


def gold(prompts, responses, records):
    calls = int(CALLS.read_text()) if CALLS.exists() else 0
    CALLS.write_text(str(calls + 1))
    return [GOLD[calls]] * len(responses)
"""


def test_a_monitor_rollback_in_round_two_ends_the_loop_there_and_a_rerun_trains_nothing(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    (tmp_path / "loop_gold.py").write_text(textwrap.dedent(SCRIPT))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "loop_gold", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    command = ["loop", "--judge", "sentiment", "--out", str(out), "--set", f"model.name={tiny_model_dir}", *QUICK,
               "loop.rounds=3", "loop.ppo_iterations=2", "monitor.gold=function",
               "monitor.gold_function=loop_gold:gold", "monitor.num_prompts=2", "monitor.action=rollback"]  # fmt: skip
    assert main(command) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    reason = "the gold score 0.200 fell below its start 0.500 by more than monitor.gold_tolerance 0.1"
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and not (out / "round-3").exists()
    assert summary["rounds"][0]["monitor_stop"] is None
    assert summary["rounds"][1]["monitor_stop"] == {"stopped_at": 3, "reason": reason, "rolled_back_to": 1}
    assert summary["rounds"][1]["ppo_iterations"] == 3
    monitor = summary["monitor"]
    assert (monitor["round"], monitor["stopped_at"], monitor["reason"]) == (2, 3, reason)
    assert (
        f"ended the loop in round 2 at PPO iteration 3: {reason}; the policy is rolled back to iteration 1\n" in printed
    )
    assert json.loads((out / "ppo" / "summary.json").read_text())["steps"] == 3

    # every iteration evaluated (monitor.eval_every=1 in the loop), the spread measured against the round's range
    metrics = read_jsonl(out / "ppo" / "metrics.jsonl")
    assert [m["monitor/gold"] for m in metrics] == pytest.approx(GOLD[:4], abs=1e-6)
    assert all("monitor/spread" in m for m in metrics)
    _, state = load_checkpoint(latest_checkpoint(out / "ppo"))
    history = state["monitor"]["history"]
    assert [e["segment"] for e in history] == [1, 1, 1, 2]  # the proxy's trend restarts with round 2's reward model
    for evaluation in history:
        reward = out / f"round-{evaluation['segment']}" / "rm" / "final" / "reward.json"
        assert evaluation["spread_range"] == json.loads(reward.read_text())["spread_range"]

    # the same command again: the stop is on disk, nothing more trains
    assert main(command) == 0
    assert json.loads((out / "summary.json").read_text())["rounds"] == summary["rounds"]
    assert not (out / "round-3").exists() and (tmp_path / "gold_calls.txt").read_text() == "4"


def test_over_optimisation_compares_proxies_of_one_round_only():
    rising = [Evaluation(step=s, proxy=float(s), kl=0.0, gold=1.0 - 0.1 * s, segment=1 + s // 3) for s in range(5)]
    assert over_optimisation(rising[:3], 2) is not None  # one reward model: proxy up, gold down twice
    assert over_optimisation(rising[:4], 2) is None  # the window reaches into round 2's renormalised reward
    assert over_optimisation(rising[:5], 2) is None
    assert over_optimisation([*rising[:5], Evaluation(5, 5.0, 0.0, 0.4, segment=2)], 2) is not None


def test_the_loop_monitor_judges_with_the_loops_judge_unless_told_otherwise(tmp_path):
    judge = RewardConfig(kind="length", target_length=7)
    monitor = ppo_config(LoopConfig(judge=judge), tmp_path / "rm", tmp_path / "ppo").monitor
    assert (monitor.enabled, monitor.gold, monitor.eval_every) == (True, "length", 1)
    config = LoopConfig(judge=judge)
    config.monitor.gold = "sentiment"
    assert ppo_config(config, tmp_path / "rm", tmp_path / "ppo").monitor.gold == "sentiment"
