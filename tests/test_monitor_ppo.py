"""The reward-hacking monitor in `rlhfkit ppo`: a hackable proxy, a gold judge that turns, the run stops in time.

The proxy rewards longer answers and rises with every evaluation (easy to hack); the gold judge's
scores are scripted to rise, turn at the third evaluation and fall, as Gao et al.'s gold reward does.
"""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.config import RewardConfig
from rlhfkit.configs.demo import DemoConfig, ppo_config
from rlhfkit.recipes.ppo_monitor import spread_range_of
from rlhfkit.tracking import read_jsonl

GOLD = [0.0, 0.3, 0.5, 0.4, 0.35, 0.2, -0.1, -0.3]  # the gold judge's score at evaluation 0, 1, ...
SCRIPT = f'''
from pathlib import Path

GOLD = {GOLD}
CALLS = Path("gold_calls.txt")  # in the run's working directory: evaluations so far


def evaluations_so_far():
    return int(CALLS.read_text()) if CALLS.exists() else 0


def proxy(prompts, responses, records):
    """Rises with every evaluation, and a little with every word: a reward that is easy to hack."""
    return [evaluations_so_far() + 0.01 * len(response.split()) for response in responses]


def gold(prompts, responses, records):
    """The scripted judge: one call per evaluation."""
    calls = evaluations_so_far()
    CALLS.write_text(str(calls + 1))
    return [GOLD[calls]] * len(responses)
'''


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """The module `monitor_scripted` importable, and a fresh working directory per run (its evaluation count)."""
    (tmp_path / "monitor_scripted.py").write_text(textwrap.dedent(SCRIPT))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "monitor_scripted", raising=False)

    def enter(name: str) -> Path:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        monkeypatch.chdir(directory)
        return directory

    return enter


def settings(model_dir, *extra):
    return ["--set", f"model.name={model_dir}", "model.dtype=float32", "train.batch_size=2",
            "train.ppo_epochs=1", "generation.max_new_tokens=5", "train.checkpoint_every=1", "optim.learning_rate=1e-3",
            "reward.kind=function", "reward.function=monitor_scripted:proxy", "monitor.enabled=true",
            "monitor.gold=function", "monitor.gold_function=monitor_scripted:gold", "monitor.eval_every=1",
            "monitor.num_prompts=2", "monitor.patience=2", *extra]  # fmt: skip


def untimed(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in metrics]


def test_the_monitor_stops_the_run_before_the_gold_score_falls_below_its_start(tiny_model_dir, scripted, capsys):
    out = scripted("stop") / "run"
    assert main(["ppo", *settings(tiny_model_dir, "train.steps=6"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["monitor"]["stopped_at"] == 4
    reason = summary["monitor"]["reason"]  # the proxy's digits depend on the answers' lengths
    assert reason.startswith("over-optimisation: the proxy reward rose 2.0")
    assert reason.endswith("while the gold judge fell 0.500 -> 0.350 over 2 evaluations (steps 2-4)")
    assert summary["monitor"]["best_gold_step"] == 2 and summary["monitor"]["rolled_back_to"] is None
    assert f"rlhfkit ppo: stopped at step 4: {reason}\n" in printed
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    assert [m["monitor/gold"] for m in metrics] == pytest.approx(GOLD[:5], abs=1e-6)
    assert min(m["monitor/gold"] for m in metrics) >= GOLD[0]  # stopped before the gold fell below its start
    assert [m["monitor/stop"] for m in metrics] == [0.0] * 4 + [1.0]
    proxies = [m["monitor/proxy"] for m in metrics]
    assert proxies == sorted(proxies)
    assert {"monitor/kl", "monitor/distinct_1", "monitor/distinct_2", "monitor/repetition", "monitor/length"} <= set(
        metrics[-1]
    )
    assert (out / "final" / "config.json").exists() and (out / "over_optimisation.png").exists()
    assert summary["score_first"] == metrics[1]["reward/score_mean"]  # step 0 holds the monitor's figures only


def test_rollback_leaves_the_best_gold_policy_in_final_and_survives_a_resume(tiny_model_dir, scripted):
    rolled = scripted("rollback") / "run"
    assert (
        main(["ppo", *settings(tiny_model_dir, "train.steps=6", "monitor.action=rollback"), "--out", str(rolled)]) == 0
    )
    summary = json.loads((rolled / "summary.json").read_text())
    assert (summary["monitor"]["stopped_at"], summary["monitor"]["rolled_back_to"]) == (4, 2)
    # a run of 2 steps, to the gold judge's best, under the same scripted scores ends with the same policy
    two = scripted("two") / "run"
    assert main(["ppo", *settings(tiny_model_dir, "train.steps=2"), "--out", str(two)]) == 0
    best, final = (
        load_file(str(two / "final" / "model.safetensors")),
        load_file(str(rolled / "final/model.safetensors")),
    )
    assert best.keys() == final.keys() and all(torch.equal(best[n], final[n]) for n in best)
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(best[n], initial[n]) for n in best if n in initial), "training changed nothing"

    # as if the run had died after step 3: the monitor's history and the best weights come from the checkpoint
    metrics_before = untimed(read_jsonl(rolled / "metrics.jsonl"))
    shutil.rmtree(rolled / "checkpoints" / "step-4")
    shutil.rmtree(rolled / "final")
    (rolled / "summary.json").unlink()
    scripted("rollback").joinpath("gold_calls.txt").write_text("4")  # the evaluations at steps 0-3 were made
    assert main(["ppo", "--resume", "--out", str(rolled)]) == 0
    assert json.loads((rolled / "summary.json").read_text())["monitor"] == summary["monitor"]
    assert untimed(read_jsonl(rolled / "metrics.jsonl")) == metrics_before
    again = load_file(str(rolled / "final" / "model.safetensors"))
    assert all(torch.equal(best[n], again[n]) for n in best)


def test_monitor_keys_are_checked_before_anything_is_written(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    for extra, message in [
        (["monitor.action=rollback"], "monitor.action=rollback goes back to the best gold score: set monitor.gold"),
        (["monitor.gold=oracle"], "monitor.gold must be empty or one of sentiment"),
        (["monitor.gold=function"], "monitor.gold_function must look like package.module:function"),
        (["monitor.patience=0"], "monitor.num_prompts and monitor.patience must be positive"),
        ([f"monitor.prompts={tmp_path / 'none.jsonl'}"], str(tmp_path / "none.jsonl")),
        (["monitor.gold=rouge"], "record 1 has no 'reference' string, which reward.kind=rouge compares against"),
    ]:
        code = main(["ppo", "--set", f"model.name={tiny_model_dir}", "monitor.enabled=true", *extra, "--out", str(out)])
        assert code == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_the_spread_range_comes_from_the_reward_source_or_its_reward_json(tmp_path):
    (tmp_path / "reward.json").write_text(json.dumps({"gain": 1.0, "bias": 0.0, "spread_range": [0.05, 0.4]}))
    assert spread_range_of(lambda p, r, x: [0.0], RewardConfig(kind="model", model=str(tmp_path))) == [0.05, 0.4]
    ensemble = lambda p, r, x: [0.0]  # noqa: E731
    ensemble.spread_range = (0.1, 0.2)
    assert spread_range_of(ensemble, RewardConfig(kind="model", model=str(tmp_path))) == [0.1, 0.2]
    (tmp_path / "reward.json").write_text(json.dumps({"gain": 1.0, "bias": 0.0}))
    assert spread_range_of(lambda p, r, x: [0.0], RewardConfig(kind="model", model=str(tmp_path))) is None
    assert spread_range_of(lambda p, r, x: [0.0], RewardConfig(kind="sentiment")) is None


def test_the_demo_watches_its_ppo_stage_with_its_judge_as_gold(tmp_path):
    config = ppo_config(DemoConfig(dtype="float32", judge="length", ppo_steps=12), tmp_path / "rm", tmp_path / "ppo")
    assert (config.monitor.enabled, config.monitor.gold, config.monitor.eval_every) == (True, "length", 3)
    assert config.monitor.prompts == DemoConfig().eval_prompts
