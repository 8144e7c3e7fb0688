"""The online loop's two claims, measured with the sentiment judge as the labeller (issue 16):

1 online beats offline: R rounds of `rlhfkit loop` (L labels each, N PPO iterations each) reach a higher
  held-out gold score than one round with the same R·L labels and R·N PPO iterations (Christiano et al.
  2017; Ziegler et al. 2019's online data collection);
2 ensemble-chosen queries: R rounds choosing the pairs where the reward heads disagree give a reward-model
  accuracy on held-out pairs at least as high as R rounds of random pairs, at the same label budget.

Three loops per seed, all through the CLI: online (ensemble selection), online-random, offline. Each
writes its own directory under --out; a loop found there finished is read, not rerun (a stopped
benchmark continues). The figures are each loop's last round; with several seeds, their means.

    .venv/bin/python benchmarks/online_loop.py --out runs/bench-loop --seeds 0 1 2
        # the embedded model, the loop's defaults (3 rounds x 16 labels, 4 PPO iterations a round)
    .venv/bin/python benchmarks/online_loop.py --out /tmp/loop-smoke --quick
        # the same on a tiny random model, in a few minutes: checks the script, measures nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rlhfkit.cli import main
from rlhfkit.configs.loop import LoopSettings
from rlhfkit.models.tiny import build_tiny_model

QUICK = [
    "model.dtype=float32", "loop.labels_per_round=4", "loop.candidates_per_round=8", "loop.ppo_iterations=1",
    "train.batch_size=4", "train.ppo_epochs=1", "model.lora.top_layers=1", "rm.train.steps=4", "rm.train.batch_size=4",
    "data.num_eval_prompts=6", "generation.max_new_tokens=6",
]  # fmt: skip


def value_of(settings: list[str], key: str, default: int) -> int:
    """The last `key=value` among --set settings, as an int."""
    found = [item.partition("=")[2] for item in settings if item.startswith(f"{key}=")]
    return int(found[-1]) if found else default


def variants(rounds: int, labels: int, candidates: int, iterations: int) -> dict[str, list[str]]:
    """Each loop's settings: the same label budget, candidate pairs and PPO iterations, spent online or at once."""
    return {
        "online": [f"loop.rounds={rounds}", "loop.selection=ensemble"],
        "online-random": [f"loop.rounds={rounds}", "loop.selection=random"],
        "offline": [
            "loop.rounds=1",
            f"loop.labels_per_round={rounds * labels}",
            f"loop.candidates_per_round={rounds * candidates}",
            f"loop.ppo_iterations={rounds * iterations}",
        ],
    }


def run_loop(out: Path, settings: list[str]) -> dict:
    """The loop's summary.json, running it (or finishing it) first unless its last round is there."""
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if len(summary["rounds"]) == value_of(settings, "loop.rounds", 3):
            return summary
    code = main(["loop", "--judge", "sentiment", "--out", str(out), "--set", *settings])
    if code != 0:
        raise SystemExit(f"the loop in {out} stopped with exit code {code}")
    return json.loads(summary_path.read_text())


def report(results: dict[str, list[dict]]) -> None:
    """Per loop: gold score before and after, reward-model accuracy, labels; then the two comparisons."""

    def mean(name: str, key: str) -> float:
        return statistics.fmean(s["rounds"][-1][key] for s in results[name])

    print(f"{'loop':<14} {'labels':>6} {'gold before':>11} {'gold after':>10} {'RM accuracy':>11}  seeds")
    for name, summaries in results.items():
        before = statistics.fmean(s["gold_score_initial"] for s in summaries)
        labels = summaries[0]["rounds"][-1]["labels"]
        print(
            f"{name:<14} {labels:>6} {before:>+11.3f} {mean(name, 'gold_score'):>+10.3f} "
            f"{mean(name, 'reward_model_accuracy'):>11.1%}  {len(summaries)}"
        )
    online, offline = mean("online", "gold_score"), mean("offline", "gold_score")
    ensemble, random = mean("online", "reward_model_accuracy"), mean("online-random", "reward_model_accuracy")
    print(
        f"1 online vs offline gold score: {online:+.3f} vs {offline:+.3f} ({'holds' if online > offline else 'fails'})"
    )
    print(
        f"2 ensemble vs random RM accuracy: {ensemble:.1%} vs {random:.1%} "
        f"({'holds' if ensemble >= random else 'fails'})"
    )


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a directory for the loops (reruns continue)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; figures are their means")
    parser.add_argument("--quick", action="store_true", help="a tiny random model: checks the script only")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="loop keys for every run")
    args = parser.parse_args()
    common = list(args.set)
    if args.quick:
        tiny = args.out / "tiny-model"
        if not (tiny / "config.json").exists():
            build_tiny_model(tiny)
        common = [f"model.name={tiny}", *QUICK, *common]
    rounds = value_of(common, "loop.rounds", 3)
    labels = value_of(common, "loop.labels_per_round", 16)
    given = value_of(common, "loop.candidates_per_round", 0)
    candidates = LoopSettings(labels_per_round=labels, candidates_per_round=given).candidate_pairs
    iterations = value_of(common, "loop.ppo_iterations", 4)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seed by seed, so that a benchmark stopped early has whole comparisons
        for name, settings in variants(rounds, labels, candidates, iterations).items():
            out = args.out / f"{name}-seed{seed}"
            results.setdefault(name, []).append(run_loop(out, [*common, *settings, f"seed={seed}"]))
    report(results)


if __name__ == "__main__":
    main_benchmark()
