"""`--config` with a TRL-style flat file: mapped keys land in config.yaml; anything else is one line, exit 2."""

import json

import pytest
import yaml

from rlhfkit.cli import main
from rlhfkit.errors import UserError
from rlhfkit.report_to import REPORT_TO_ENV
from rlhfkit.trl_keys import from_trl

TOPICS = "cat dog food movie book weather friend house".split()


@pytest.fixture
def demos(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"about the {t}", "response": "good great"}) + "\n" for t in TOPICS))
    return path


@pytest.fixture(autouse=True)
def report_to_restored(monkeypatch):
    """A file's report_to sets RLHFKIT_REPORT_TO for the run: restore it after each test."""
    monkeypatch.setenv(REPORT_TO_ENV, "none")
    monkeypatch.delenv(REPORT_TO_ENV)


def write(path, values):
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


def stdout_lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if "mapped TRL keys" in line]


def test_a_trl_sft_file_is_mapped_and_named_in_one_line(tiny_model_dir, demos, tmp_path, capsys):
    out = tmp_path / "run"
    trl = {
        "model_name_or_path": tiny_model_dir,
        "output_dir": str(out),
        "learning_rate": 0.001,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 2,
        "max_steps": 2,
        "warmup_ratio": 0.5,
        "lr_scheduler_type": "linear",
        "adam_beta2": 0.99,
        "save_steps": 1,
        "eval_steps": 1,
        "seed": 5,
        "bf16": False,
        "max_length": 64,
        "report_to": "none",
    }
    config_file = write(tmp_path / "trl.yaml", trl)
    code = main(["sft", "--config", config_file, "--set", f"data.train={demos}", "train.eval_samples=0"])
    assert code == 0
    (line,) = stdout_lines(capsys)
    assert line.startswith(f"rlhfkit sft: mapped TRL keys from {config_file}: model_name_or_path -> model.name, ")
    assert (
        "per_device_train_batch_size x gradient_accumulation_steps -> train.batch_size, train.micro_batch_size" in line
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["name"] == tiny_model_dir and saved["model"]["dtype"] == "float32" and saved["seed"] == 5
    assert saved["optim"] == {
        **saved["optim"],
        "learning_rate": 0.001,
        "warmup_steps": 1,  # ceil(0.5 x 2 steps)
        "schedule": "linear",
        "betas": [0.9, 0.99],
    }
    assert {k: saved["train"][k] for k in ("steps", "batch_size", "micro_batch_size", "checkpoint_every")} == {
        "steps": 2,
        "batch_size": 2,
        "micro_batch_size": 1,
        "checkpoint_every": 1,
    }
    assert saved["train"]["eval_every"] == 1 and saved["data"]["max_length"] == 64 and saved["out"] == str(out)


def test_a_trl_grpo_file_counts_completions_as_trl_does(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    trl = {
        "model_name_or_path": tiny_model_dir,
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "num_generations": 4,
        "max_completion_length": 4,
        "max_steps": 1,
        "beta": 0.02,
        "epsilon": 0.3,
        "num_iterations": 1,
        "loss_type": "dr_grpo",
        "scale_rewards": False,
        "bf16": False,
    }
    assert main(["grpo", "--config", write(tmp_path / "grpo.yaml", trl)]) == 0
    assert len(stdout_lines(capsys)) == 1
    saved = yaml.safe_load((out / "config.yaml").read_text())
    # 4 completions per forward x 2 accumulated = 8 per optimiser step = 2 prompts x 4 generations
    assert {k: saved["train"][k] for k in ("batch_size", "mini_batch_size", "micro_batch_size", "ppo_epochs")} == {
        "batch_size": 2,
        "mini_batch_size": 8,
        "micro_batch_size": 4,
        "ppo_epochs": 1,
    }
    assert saved["algorithm"]["group_size"] == 4 and saved["algorithm"]["advantage"] == "grpo"
    assert saved["algorithm"]["loss_aggregation"] == "constant_normalizer" and not saved["algorithm"]["scale_by_std"]
    assert saved["kl"]["coef"] == 0.02 and saved["ppo"]["clip_range"] == 0.3
    assert saved["generation"]["max_new_tokens"] == 4


@pytest.mark.parametrize(
    "extra, named",
    [
        ({"num_train_epochs": 3}, "TRL key 'num_train_epochs' has no rlhfkit equivalent (rlhfkit counts optimiser"),
        ({"beta": 0.1}, "TRL key 'beta' has no equivalent in rlhfkit sft"),
        ({"per_device_train_batch_sise": 2}, "did you mean 'per_device_train_batch_size'?"),
        ({"lr_scheduler_type": "polynomial"}, "TRL key 'lr_scheduler_type' 'polynomial' has no equivalent"),
        ({"warmup_ratio": 0.1}, "TRL key 'warmup_ratio' needs a number and max_steps in the same file"),
        ({"train": {"steps": 2}}, "mixes TRL keys (learning_rate, output_dir) with rlhfkit sections (train)"),
        ({"report_to": "nonesuch"}, "report_to 'nonesuch': unknown tracker nonesuch"),
        ({"optim": 5}, "mixes TRL keys (learning_rate, output_dir) with rlhfkit sections (optim)"),
        ({"optim": "sgd"}, "TRL key 'optim' 'sgd' has no equivalent; rlhfkit trains with AdamW"),
    ],
)
def test_keys_without_an_equivalent_are_refused_in_one_line_and_nothing_is_written(
    extra, named, tiny_model_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    config_file = write(tmp_path / "trl.yaml", {"learning_rate": 0.001, "output_dir": str(out), **extra})
    assert main(["sft", "--config", config_file, "--set", f"model.name={tiny_model_dir}"]) == 2
    captured = capsys.readouterr()
    (error,) = captured.err.strip().splitlines()
    assert error.startswith("rlhfkit sft: error: ") and named in error, error
    assert "mapped TRL keys" not in captured.out
    assert not out.exists()


def test_dpo_ppo_and_rloo_keys_translate_to_their_commands_keys():
    def mapped(command, values, group_size=0):
        return from_trl(values, {"model", "train", "optim", "seed", "out"}, command, "f.yaml", group_size).values

    dpo = mapped("dpo", {"beta": 0.3, "loss_type": "sigmoid", "label_smoothing": 0.2, "max_length": 128})
    assert dpo == {"train": {"beta": 0.3, "loss": "conservative", "label_smoothing": 0.2}, "data": {"max_length": 128}}
    assert mapped("dpo", {"loss_type": "ipo"}) == {"train": {"loss": "ipo"}}
    batches = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "num_mini_batches": 3}
    ppo = mapped("ppo", {**batches, "kl_coef": 0.1, "cliprange": 0.1, "vf_coef": 0.5, "num_ppo_epochs": 2,
                         "response_length": 9})  # fmt: skip
    assert ppo["train"] == {"micro_batch_size": 2, "mini_batch_size": 4, "batch_size": 12, "ppo_epochs": 2}
    assert ppo["kl"] == {"coef": 0.1} and ppo["ppo"] == {"clip_range": 0.1, "value_coef": 0.5}
    assert ppo["generation"] == {"max_new_tokens": 9}
    rloo = mapped("rloo", {"rloo_k": 2, "per_device_train_batch_size": 6}, group_size=4)
    assert rloo["algorithm"] == {"group_size": 2} and rloo["train"]["batch_size"] == 3  # 6 completions / k = 2
    with pytest.raises(UserError, match="gives 6 completions per optimiser step, not a multiple of num_generations 4"):
        mapped("grpo", {"per_device_train_batch_size": 6}, group_size=4)
    with pytest.raises(UserError, match="TRL key 'num_generations' must be a positive integer, got 'four'"):
        mapped("grpo", {"per_device_train_batch_size": 8, "num_generations": "four"}, group_size=4)
    with pytest.raises(UserError, match="rlhfkit gym takes only its own keys"):
        mapped("gym", {"learning_rate": 0.1})
