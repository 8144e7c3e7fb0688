"""The reward-hacking monitor's pure part: degeneration signals, the stopping rule, its state; and fit's stop hook."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rlhfkit.checkpoint import list_checkpoints
from rlhfkit.rewards.hacking import (
    Evaluation,
    HackingMonitor,
    StopRules,
    decide,
    degeneration_signals,
    distinct_n,
    mean_length,
    plot_over_optimisation,
    repetition,
)
from rlhfkit.runtime import RunDirectory, Runtime, fit
from rlhfkit.tracking import read_jsonl

# -- degeneration signals, by hand ---------------------------------------------------------------------


def test_distinct_n_counts_distinct_ngrams_over_all_responses():
    responses = [[1, 2, 1, 2], [1, 3]]
    # unigrams 1 2 1 2 1 3: 3 distinct of 6; bigrams (1,2) (2,1) (1,2) (1,3): 3 distinct of 4
    assert distinct_n(responses, 1) == 3 / 6
    assert distinct_n(responses, 2) == 3 / 4
    assert distinct_n(["the cat the cat".split()], 1) == 2 / 4
    assert distinct_n([[7], []], 2) == 0.0  # no bigram at all: as degenerate as it gets


def test_repetition_is_the_share_of_a_responses_own_ngrams_that_repeat():
    # [5]*6: three 4-grams, all (5,5,5,5): 1 - 1/3; [1..5]: two distinct 4-grams: 0; [1, 2]: none, left out
    assert repetition([[5] * 6, [1, 2, 3, 4, 5], [1, 2]]) == pytest.approx((2 / 3 + 0) / 2, abs=1e-12)
    assert repetition([[1, 2, 1, 2, 1]], n=2) == pytest.approx(1 - 2 / 4, abs=1e-12)
    assert repetition([[1]]) == 0.0


def test_degeneration_signals_of_a_collapsed_and_a_varied_set():
    collapsed = [[9, 9, 9, 9, 9, 9]] * 2
    assert degeneration_signals(collapsed) == {
        "distinct_1": 1 / 12,
        "distinct_2": 1 / 10,
        "repetition": pytest.approx(2 / 3, abs=1e-12),
        "length": 6.0,
    }
    varied = degeneration_signals([[1, 2, 3, 4], [5, 6, 7]])
    assert (varied["distinct_1"], varied["distinct_2"], varied["repetition"]) == (1.0, 1.0, 0.0)
    assert mean_length([[1, 2, 3, 4], [5, 6, 7]]) == 3.5


# -- the stopping rule on scripted sequences ------------------------------------------------------------


def evaluations(proxy, gold=None, spread=None, distinct_2=None, spread_range=None):
    count = len(proxy)
    gold, spread, distinct_2 = gold or [None] * count, spread or [None] * count, distinct_2 or [None] * count
    return [
        Evaluation(
            step,
            p,
            kl=0.1 * step,
            gold=g,
            spread=s,
            spread_range=spread_range,
            degeneration={} if d is None else {"distinct_2": d},
        )  # fmt: skip
        for step, (p, g, s, d) in enumerate(zip(proxy, gold, spread, distinct_2))
    ]


def decisions(history, rules):
    monitor = HackingMonitor(rules)
    return [monitor.observe(evaluation).action for evaluation in history], monitor


def test_over_optimisation_stops_before_the_gold_falls_below_its_start():
    # Gao et al.'s curve: gold rises with the proxy, turns at step 3, the proxy keeps rising
    gold = [0.0, 0.2, 0.4, 0.6, 0.5, 0.45, 0.3, -0.1]
    actions, monitor = decisions(evaluations(proxy=list(range(8)), gold=gold), StopRules(patience=2))
    assert actions == ["continue"] * 5 + ["stop"] * 3
    assert monitor.stopped_at == 5
    assert monitor.reason == (
        "over-optimisation: the proxy reward rose 3.000 -> 5.000 while the gold judge fell 0.600 -> 0.450 "
        "over 2 evaluations (steps 3-5)"
    )
    assert all(e.gold >= gold[0] for e in monitor.history[: monitor.stopped_at + 1])
    assert monitor.best().step == 3
    # patience 3 waits one more evaluation
    assert decisions(evaluations(proxy=list(range(8)), gold=gold), StopRules(patience=3))[1].stopped_at == 6


def test_a_streak_broken_by_a_rising_gold_or_a_falling_proxy_goes_on():
    rules = StopRules(patience=2, gold_tolerance=0.3)
    assert decisions(evaluations(proxy=[0, 1, 2, 3], gold=[0.5, 0.4, 0.45, 0.4]), rules)[0] == ["continue"] * 4
    assert decisions(evaluations(proxy=[0, 1, 0.5, 3], gold=[0.5, 0.4, 0.3, 0.25]), rules)[0] == ["continue"] * 4


def test_gold_below_its_start_by_more_than_the_tolerance_stops():
    # both fall: not over-optimisation, but the policy has become worse than where it began
    actions, monitor = decisions(evaluations(proxy=[1, 0.9, 0.8], gold=[0.5, 0.45, 0.3]), StopRules(gold_tolerance=0.1))
    assert actions == ["continue", "continue", "stop"]
    assert monitor.reason == "the gold score 0.300 fell below its start 0.500 by more than monitor.gold_tolerance 0.1"


def test_a_spread_outside_the_training_range_stops_and_no_range_means_no_check():
    actions, monitor = decisions(evaluations([0, 1, 2], spread=[0.2, 0.25, 0.35], spread_range=[0.1, 0.3]), StopRules())
    assert actions == ["continue", "continue", "stop"]
    assert monitor.reason.startswith("the reward ensemble's spread 0.350 left the range [0.100, 0.300]")
    assert decisions(evaluations([0, 1, 2], spread=[0.2, 0.25, 0.35]), StopRules())[0] == ["continue"] * 3
    # the first evaluation is the baseline, whatever it shows
    assert decisions(evaluations([0, 1], spread=[0.9, 0.2], spread_range=[0.1, 0.3]), StopRules())[0] == [
        "continue",
        "continue",
    ]


def test_distinct_2_below_a_fraction_of_its_start_stops_only_when_asked():
    history = evaluations(proxy=[0, 1, 2], distinct_2=[0.8, 0.5, 0.3])
    assert decisions(history, StopRules(distinct_2_fraction=0.5))[0] == ["continue", "continue", "stop"]
    assert decisions(history, StopRules())[0] == ["continue"] * 3


def test_without_a_gold_judge_a_rising_proxy_never_stops():
    actions, monitor = decisions(evaluations(proxy=list(range(6))), StopRules(patience=1))
    assert actions == ["continue"] * 6 and monitor.best() is None and monitor.summary()["stopped_at"] is None


def test_the_state_round_trips_through_json_and_decides_as_before():
    history = evaluations(proxy=list(range(8)), gold=[0.0, 0.2, 0.4, 0.6, 0.5, 0.45, 0.3, -0.1])
    straight = HackingMonitor(StopRules())
    first_half = HackingMonitor(StopRules())
    for evaluation in history[:5]:
        straight.observe(evaluation), first_half.observe(evaluation)
    resumed = HackingMonitor(StopRules())
    resumed.load_state_dict(json.loads(json.dumps(first_half.state_dict())))
    assert [straight.observe(e) for e in history[5:]] == [resumed.observe(e) for e in history[5:]]
    assert straight.state_dict() == resumed.state_dict()
    assert decide(resumed.history, StopRules()).action == "stop"


def test_metrics_name_the_latest_figures_under_monitor(tmp_path):
    monitor = HackingMonitor(StopRules())
    monitor.observe(Evaluation(0, proxy=0.5, kl=0.0, gold=0.1, degeneration={"distinct_2": 0.9, "length": 7.0}))
    assert monitor.metrics() == {
        "monitor/proxy": 0.5,
        "monitor/gold": 0.1,
        "monitor/kl": 0.0,
        "monitor/distinct_2": 0.9,
        "monitor/length": 7.0,
        "monitor/stop": 0.0,
    }
    monitor.observe(Evaluation(1, proxy=0.7, kl=0.4, gold=0.2))
    png = plot_over_optimisation(monitor.history, 1, tmp_path / "over_optimisation.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- fit ends a run whose trainer asks to stop ---------------------------------------------------------


@dataclasses.dataclass
class CountConfig:
    steps: int = 5


class StoppingTrainer:
    """Counts steps; its evaluation asks to stop once the count reaches `stop_at` (state kept in checkpoints)."""

    command, eval_every, checkpoint_every, plot_keys = "count", 1, 0, ("count",)

    def __init__(self, stop_at: int):
        self.config, self.runtime = CountConfig(), Runtime()
        self.step, self.total_steps, self.stop_at = 0, 5, stop_at
        self.stop_reason: str | None = None
        self.train_steps = 0

    def train_step(self):
        self.step += 1
        self.train_steps += 1
        return {"count": float(self.step)}, None

    def evaluate(self):
        if self.step >= self.stop_at:
            self.stop_reason = f"count reached {self.stop_at}"
        return {"eval/count": float(self.step)}, None

    def checkpoint_state(self):
        return {"count": {"step": torch.tensor(self.step)}}, {"stop_reason": self.stop_reason}

    def load_checkpoint_state(self, tensors, state):
        self.stop_reason = state["stop_reason"]

    def save_final(self, directory: Path):
        (directory / "count.json").write_text(json.dumps(self.step))

    def summary(self, out, history):
        return {"stop": self.stop_reason}


def test_fit_ends_the_run_at_the_step_whose_evaluation_asked_to_stop(tmp_path, capsys):
    out = tmp_path / "run"
    summary = fit(StoppingTrainer(stop_at=2), RunDirectory.resolve(str(out), "count", resume=False))
    assert (summary["steps"], summary["stop"]) == (2, "count reached 2")
    assert "rlhfkit count: stopped at step 2: count reached 2\n" in capsys.readouterr().out
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2]
    assert json.loads((out / "final" / "count.json").read_text()) == 2
    assert [p.name for p in list_checkpoints(out)] == ["step-2"]  # the stopped state, for --resume
    # resuming a stopped run takes no further step: it writes final/ and the summary again
    resumed = StoppingTrainer(stop_at=2)
    assert fit(resumed, RunDirectory.resolve(str(out), "count", resume=True))["steps"] == 2
    assert resumed.train_steps == 0
