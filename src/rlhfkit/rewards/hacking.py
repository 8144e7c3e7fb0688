"""Is the policy hacking its reward? Signals of it, and a rule that stops the run, over plain data.

A learned reward is a proxy for what people want. Optimised hard enough, the policy finds what the
proxy overrates: Gao et al. (2022) measured the gold score first rising with the KL to the
reference, then falling while the proxy keeps rising (over-optimisation). The monitor watches, once
per evaluation on held-out prompts:

    proxy         the learned reward, the one PPO maximises
    gold          an independent judge of the same samples (optional)
    kl            the policy's KL to the reference on them
    spread        the reward ensemble's disagreement on them (optional)
    degeneration  distinct-1/2 (Li et al. 2016), seq-rep-4 (Welleck et al. 2019), mean length

and stops the run at the first of these (the reason is one line):

    over-optimisation  the proxy rose and the gold fell at each of the last `patience` evaluations
    gold below start   the gold fell below its first value by more than `gold_tolerance`
    spread             the ensemble's spread left the range seen in reward-model training
    degeneration       distinct-2 fell below `distinct_2_fraction` of its first value

The first rule is the one that catches the turn before the gold falls below where it started; the
second is the backstop when the proxy is noisy. The monitor's state is its list of evaluations (plain
numbers), so a checkpoint holds it and a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rlhfkit.tracking import new_figure

REPETITION_N = 4  # seq-rep-4: Welleck et al. 2019's measure of a response looping on itself


# -- degeneration signals -------------------------------------------------------------------------


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """The n-grams of one sequence, in order (none when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int) -> float:
    """Distinct n-grams over all n-grams of all sequences (Li et al. 2016).

    1 when no n-gram occurs twice anywhere; towards 0 as the responses collapse onto one phrase;
    0 when there is no n-gram at all (empty responses are as degenerate as it gets).
    """
    grams = [gram for tokens in sequences for gram in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(sequences: Sequence[Sequence[Hashable]], n: int = REPETITION_N) -> float:
    """seq-rep-n (Welleck et al. 2019): the share of a response's n-grams that repeat one of its own.

    1 - distinct / total n-grams within each response, averaged over the responses that have an
    n-gram: 0 when none repeats, towards 1 for a response stuck in a loop.
    """
    shares = [1 - len(set(grams)) / len(grams) for grams in (ngrams(tokens, n) for tokens in sequences) if grams]
    return sum(shares) / len(shares) if shares else 0.0


def mean_length(sequences: Sequence[Sequence[Hashable]]) -> float:
    return sum(len(tokens) for tokens in sequences) / len(sequences) if sequences else 0.0


def degeneration_signals(sequences: Sequence[Sequence[Hashable]]) -> dict[str, float]:
    """The degeneration signals of a set of responses, as token ids (or words: `[t.split() for t in texts]`)."""
    return {
        "distinct_1": distinct_n(sequences, 1),
        "distinct_2": distinct_n(sequences, 2),
        "repetition": repetition(sequences),
        "length": mean_length(sequences),
    }


# -- the stopping rule ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Evaluation:
    """One evaluation's figures on the held-out samples: means over the responses."""

    step: int
    proxy: float
    kl: float
    gold: float | None = None
    spread: float | None = None
    spread_range: list[float] | None = None  # [low, high] seen in the scoring reward model's training; None: unknown
    degeneration: dict[str, float] = dataclasses.field(default_factory=dict)
    segment: int = 0  # proxies compare only within one segment: the online loop renormalises its reward every round


@dataclasses.dataclass(frozen=True)
class StopRules:
    patience: int = 2  # evaluations in a row of proxy up, gold down
    gold_tolerance: float = 0.1  # how far below its first value the gold may fall
    distinct_2_fraction: float = 0.0  # 0: off


class Decision(NamedTuple):
    action: str  # "continue" or "stop"
    reason: str  # one line; empty when continuing


def over_optimisation(history: Sequence[Evaluation], patience: int) -> str | None:
    """The proxy rose and the gold fell at each of the last `patience` evaluations (Gao et al. 2022)."""
    if len(history) <= patience or history[-1].gold is None:
        return None
    window = history[-patience - 1 :]
    if window[0].segment != window[-1].segment:  # a proxy scored by another reward (model) says nothing of the trend
        return None
    diverging = all(
        later.proxy > earlier.proxy and later.gold < earlier.gold  # type: ignore[operator]
        for earlier, later in zip(window, window[1:])
    )
    if not diverging:
        return None
    first, last = window[0], window[-1]
    return (
        f"over-optimisation: the proxy reward rose {first.proxy:.3f} -> {last.proxy:.3f} while the gold judge fell "
        f"{first.gold:.3f} -> {last.gold:.3f} over {patience} evaluations (steps {first.step}-{last.step})"
    )


def gold_below_start(history: Sequence[Evaluation], tolerance: float) -> str | None:
    start, now = history[0].gold, history[-1].gold
    if start is None or now is None or now >= start - tolerance:
        return None
    return f"the gold score {now:.3f} fell below its start {start:.3f} by more than monitor.gold_tolerance {tolerance}"


def spread_outside(history: Sequence[Evaluation]) -> str | None:
    """The latest spread against the range of the reward model that scored it (the online loop retrains it)."""
    spread, spread_range = history[-1].spread, history[-1].spread_range
    if spread_range is None or spread is None or spread_range[0] <= spread <= spread_range[1]:
        return None
    low, high = spread_range
    return (
        f"the reward ensemble's spread {spread:.3f} left the range [{low:.3f}, {high:.3f}] seen in reward-model "
        "training: the reward model is judging text unlike any it was trained on"
    )


def degenerate(history: Sequence[Evaluation], fraction: float) -> str | None:
    start, now = history[0].degeneration.get("distinct_2"), history[-1].degeneration.get("distinct_2")
    if not fraction or not start or now is None or now >= fraction * start:
        return None
    return (
        f"distinct-2 {now:.3f} fell below monitor.distinct_2_fraction {fraction} of its start {start:.3f}: "
        "the responses are collapsing onto a few phrases"
    )


def decide(history: Sequence[Evaluation], rules: StopRules) -> Decision:
    """The first rule of the module docstring that fires on `history` (oldest first).

    The first evaluation (before any training step) is the baseline: nothing stops there.
    """
    if len(history) < 2:
        return Decision("continue", "")
    reason = (
        over_optimisation(history, rules.patience)
        or gold_below_start(history, rules.gold_tolerance)
        or spread_outside(history)
        or degenerate(history, rules.distinct_2_fraction)
    )
    return Decision("stop", reason) if reason else Decision("continue", "")


class HackingMonitor:
    """Fed once per evaluation; says whether to go on. Its state is the evaluations seen and the stop, if any."""

    def __init__(self, rules: StopRules):
        self.rules = rules
        self.history: list[Evaluation] = []
        self.stopped_at: int | None = None
        self.reason: str | None = None

    def observe(self, evaluation: Evaluation) -> Decision:
        """Record `evaluation` and decide; once stopped, the monitor stays stopped with its first reason."""
        self.history.append(evaluation)
        if self.reason is None:
            decision = decide(self.history, self.rules)
            if decision.action == "stop":
                self.stopped_at, self.reason = evaluation.step, decision.reason
        return Decision("stop", self.reason) if self.reason else Decision("continue", "")

    def best(self) -> Evaluation | None:
        """The evaluation with the highest gold score (the earliest of equals); None without a gold judge."""
        judged = [e for e in self.history if e.gold is not None]
        return max(judged, key=lambda e: e.gold, default=None)  # type: ignore[arg-type, return-value]

    def metrics(self) -> dict[str, float]:
        """monitor/* figures of the latest evaluation for metrics.jsonl (absent figures are left out)."""
        latest = self.history[-1]
        figures = {"proxy": latest.proxy, "gold": latest.gold, "kl": latest.kl, "spread": latest.spread}
        figures |= latest.degeneration
        figures["stop"] = float(self.reason is not None)
        return {f"monitor/{name}": float(value) for name, value in figures.items() if value is not None}

    def summary(self) -> dict[str, Any]:
        """summary.json's `monitor` entry: where and why the run stopped (null when it ran to the end)."""
        return {"stopped_at": self.stopped_at, "reason": self.reason, "evaluations": len(self.history)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dataclasses.asdict(e) for e in self.history],
            "stopped_at": self.stopped_at,
            "reason": self.reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [Evaluation(**e) for e in state["history"]]
        self.stopped_at, self.reason = state["stopped_at"], state["reason"]


def plot_over_optimisation(history: Sequence[Evaluation], stopped_at: int | None, out_png: str | Path) -> Path:
    """Gao et al. 2022's picture, measured: proxy and gold against the step and against √KL, the stop marked."""
    figure, (by_step, by_kl) = new_figure(1, 2, figsize=(10, 3.6))
    steps = [e.step for e in history]
    root_kl = [math.sqrt(max(e.kl, 0.0)) for e in history]
    for name, values in (("proxy", [e.proxy for e in history]), ("gold", [e.gold for e in history])):
        points = [(s, k, v) for s, k, v in zip(steps, root_kl, values) if v is not None]
        if points:
            by_step.plot([p[0] for p in points], [p[2] for p in points], marker=".", label=name)
            by_kl.plot([p[1] for p in points], [p[2] for p in points], marker=".", label=name)
    kl_axis = by_step.twinx()
    kl_axis.plot(steps, [e.kl for e in history], color="grey", linestyle=":", label="KL")
    kl_axis.set_ylabel("KL to the reference")
    if stopped_at is not None:
        by_step.axvline(stopped_at, color="red", alpha=0.5, label="stop")
    by_step.set_xlabel("step")
    by_kl.set_xlabel("√KL (nats)")
    for axis in (by_step, by_kl):
        axis.set_ylabel("score")
        axis.grid(alpha=0.3)
    (lines, labels), (kl_lines, kl_labels) = by_step.get_legend_handles_labels(), kl_axis.get_legend_handles_labels()
    by_step.legend(lines + kl_lines, labels + kl_labels, loc="best", fontsize="small")
    by_kl.legend(loc="best", fontsize="small")
    figure.suptitle("over-optimisation: proxy vs gold vs KL")
    figure.tight_layout()
    out_png = Path(out_png)
    figure.savefig(out_png, dpi=100)
    return out_png
