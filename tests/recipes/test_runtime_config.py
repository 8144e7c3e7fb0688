"""`runtime.threads`: every command's key, checked at load, recorded in config.yaml, applied before the work."""

import json

import pytest
import torch
import yaml

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.configs.constitution import ConstitutionConfig
from rlhfkit.configs.demo import DemoConfig
from rlhfkit.configs.dpo import DPOConfig
from rlhfkit.configs.generate import GenerateConfig
from rlhfkit.configs.label import AILabelConfig, LabelConfig
from rlhfkit.configs.ppo import PPOConfig
from rlhfkit.configs.reward import RMConfig
from rlhfkit.configs.sft import SFTConfig
from rlhfkit.errors import UserError
from rlhfkit.gym.config import GymConfig

COMMAND_CONFIGS = [
    SFTConfig, RMConfig, DPOConfig, PPOConfig, GymConfig, GenerateConfig, LabelConfig, AILabelConfig,
    ConstitutionConfig, DemoConfig,
]  # fmt: skip


@pytest.mark.parametrize("cls", COMMAND_CONFIGS, ids=lambda cls: cls.__name__)
def test_every_command_has_runtime_threads_and_refuses_a_negative_count(cls):
    assert cls().runtime.threads == 0  # 0: the CLI's --threads decides
    assert load_config(cls, overrides=["runtime.threads=3"]).runtime.threads == 3
    with pytest.raises(UserError, match=r"runtime.threads must be >= 0 .*got -1"):
        load_config(cls, overrides=["runtime.threads=-1"])


def generate_args(tiny_model_dir, tmp_path, threads):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "say hi"}) + "\n")
    return [
        "generate", "--set", f"model.name={tiny_model_dir}", f"data.prompts={prompts}", "num_responses=1",
        "generation.max_new_tokens=2", f"runtime.threads={threads}", f"out={tmp_path / 'gen'}",
    ]  # fmt: skip


def test_runtime_threads_is_applied_and_recorded_through_the_cli(tiny_model_dir, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(generate_args(tiny_model_dir, tmp_path, 1)) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    saved = yaml.safe_load((tmp_path / "gen" / "config.yaml").read_text())
    assert saved["runtime"] == {"threads": 1}


def test_a_negative_thread_count_is_one_line_and_exit_2_before_any_output(tiny_model_dir, tmp_path, capsys):
    assert main(generate_args(tiny_model_dir, tmp_path, -1)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "runtime.threads must be >= 0" in error
    assert not (tmp_path / "gen").exists()
