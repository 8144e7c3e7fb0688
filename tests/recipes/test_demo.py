"""`rlhfkit demo --quick` through the CLI: every file of the report, valid PNGs, numbers in range, resumable stages."""

import json

import pytest
from PIL import Image

from rlhfkit.cli import main
from rlhfkit.recipes.demo import DemoConfig, split_candidates, stage_configs
from rlhfkit.reporting import monitor_section


def test_quick_demo_writes_the_whole_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    for name in ("report.md", "summary.json", "config.yaml", "1-generate/candidates.jsonl", "2-label/rankings.jsonl",
                 "2-label-heldout/comparisons.jsonl", "3-rm/final/reward.json", "4-ppo/final/config.json",
                 "4-ppo/metrics.jsonl", "5-evaluate/evaluation.json"):  # fmt: skip
        assert (out / name).exists(), name
    for png in ("reward_vs_step.png", "kl_vs_step.png", "gold_vs_kl.png"):
        with Image.open(out / png) as image:
            image.verify()
            assert image.format == "PNG"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("gold_before", "gold_after"):
        assert -1.0 <= summary[key] <= 1.0  # VADER compound
    assert 0.0 <= summary["win_rate"] <= 1.0
    assert 0.0 <= summary["reward_model_accuracy"] <= 1.0
    assert summary["kl_final"] > -0.5 and summary["wall_s"] > 0
    # the reward model is measured on prompts it never trained on, against the judge's noise-free order
    train = [json.loads(line) for line in (out / "2-label" / "rankings.jsonl").read_text().splitlines()]
    heldout = [json.loads(line) for line in (out / "2-label-heldout" / "comparisons.jsonl").read_text().splitlines()]
    assert heldout and not {r["prompt"] for r in heldout} & {r["prompt"] for r in train}
    assert all(r["meta"]["scores"][0] > r["meta"]["scores"][1] for r in heldout)
    rm = json.loads((out / "3-rm" / "summary.json").read_text())
    assert rm["kind"] == "rankings" and rm["loss_function"] == "ranking" and rm["eval_records"] == len(heldout)
    report = (out / "report.md").read_text()
    assert "Win rate" in report and "gold_vs_kl.png" in report
    # the PPO stage's reward-hacking monitor: its verdict and Gao et al.'s curve, linked where it is
    assert "![proxy vs gold vs KL over the PPO stage](4-ppo/over_optimisation.png)" in report
    assert "- Reward-hacking monitor: " in report and (out / "4-ppo" / "over_optimisation.png").exists()
    # a second run finds every stage finished and redoes none of them
    capsys.readouterr()
    mtime = (out / "4-ppo" / "final" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already done, skipping") == 6
    assert (out / "4-ppo" / "final" / "model.safetensors").stat().st_mtime_ns == mtime
    # the reported wall time covers both invocations, not only the second, short one
    assert json.loads((out / "summary.json").read_text())["wall_s"] > summary["wall_s"]


def test_interrupted_stage_resumes_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    # pretend PPO was interrupted after its first checkpoint: drop what it wrote at the end
    ppo = out / "4-ppo"
    (ppo / "summary.json").unlink()
    (out / "5-evaluate" / "evaluation.json").unlink()
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stage 4-ppo (resuming)" in printed
    assert printed.count("already done, skipping") == 4


def test_split_keeps_a_prompt_on_each_side(tmp_path):
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("".join(json.dumps({"prompt": f"p{i}", "responses": ["a", "b"]}) + "\n" for i in range(2)))
    # 0.8 of 2 prompts rounds to 2: one must still be left to train on
    train, heldout = split_candidates(candidates, 0.8, tmp_path / "split")
    assert [json.loads(line)["prompt"] for line in train.read_text().splitlines()] == ["p0"]
    assert [json.loads(line)["prompt"] for line in heldout.read_text().splitlines()] == ["p1"]


def test_stage_configs_carry_the_demo_settings_and_derive_the_ppo_minibatch(tmp_path):
    configs = stage_configs(DemoConfig(dtype="float32", ppo_batch_size=12, rm_steps=10, rm_top_layers=6), tmp_path)
    rm, ppo = configs["3-rm"], configs["4-ppo"]
    assert rm.model.lora.top_layers == 6 and ppo.model.lora.top_layers == DemoConfig.ppo_top_layers
    assert rm.data.train == str(tmp_path / "2-label" / "rankings.jsonl") and rm.out == str(tmp_path / "3-rm")
    assert rm.train.steps == 10 and rm.train.checkpoint_every == 5 and rm.model.lora.enabled
    assert ppo.reward.model == str(tmp_path / "3-rm" / "final") and ppo.train.batch_size == 12
    assert ppo.train.mini_batch_size == 0 and ppo.mini_batch_size == 3  # derived: 12 prompts -> 4 minibatches of 3
    assert configs["2-label-heldout"].noise.temperature == 0 and configs["2-label"].format == "rankings"


@pytest.mark.parametrize(
    "setting, message",
    [
        ("max_new_tokens=0", "stage 1-generate: generation.max_new_tokens must be positive"),  # a stage's check
        ("rm_top_layers=-1", "rm_top_layers must be >= 0"),  # the demo's own
    ],
)
def test_a_setting_out_of_range_exits_2_naming_it_before_anything_is_written(tmp_path, capsys, setting, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--set", setting]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not out.exists()


def test_lora_above_the_models_depth_exits_2_before_anything_is_written(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--set", f"model={tiny_model_dir}", "rm_top_layers=1", "ppo_top_layers=3"])
        == 2
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "ppo_top_layers 3 exceeds the 2 layers of model" in error
    assert not out.exists()


def test_quick_lora_above_the_tiny_models_depth_exits_2_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--set", "rm_top_layers=3"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "rm_top_layers 3 exceeds the 2 layers of model" in error
    assert not out.exists()


def test_a_failing_stage_names_itself_and_how_to_continue(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--set", f"prompts={tmp_path / 'missing.jsonl'}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("rlhfkit demo: error: stage 1-generate: ")
    assert f"rerun `rlhfkit demo --out {out}` to continue" in error


def test_the_report_states_the_monitors_stop_and_rollback(tmp_path):
    ppo = tmp_path / "4-ppo"
    ppo.mkdir()
    monitor = {"stopped_at": 6, "reason": "the gold score fell", "evaluations": 4, "rolled_back_to": None}
    (ppo / "summary.json").write_text(json.dumps({"monitor": monitor}))
    assert "- Reward-hacking monitor: **stopped PPO at step 6**: the gold score fell\n" in monitor_section(ppo)
    (ppo / "summary.json").write_text(json.dumps({"monitor": {**monitor, "rolled_back_to": 3}}))
    assert "fell; the tuned policy is rolled back to step 3, its best gold score\n" in monitor_section(ppo)
    (ppo / "summary.json").write_text(json.dumps({"monitor": {**monitor, "stopped_at": None, "reason": None}}))
    assert "ran to the end, 4 evaluations without a sign of reward hacking" in monitor_section(ppo)
    (ppo / "summary.json").write_text(json.dumps({"score_last": 1.0}))  # the monitor was off
    assert monitor_section(ppo) == ""
